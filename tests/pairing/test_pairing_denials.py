"""The refusal table is the contract with clients and dashboards: pin it exactly."""

from __future__ import annotations

import re

import pytest

from edge.refusals import Denial

# Copied from DESIGN.md ("Control WebSocket protocol", failure reasons).
DESIGN_CLOSE_REASONS = {
    "origin not allowed",
    "invalid handshake",
    "handshake timeout",
    "unauthorized: gateway token missing",
    "unauthorized: gateway token mismatch",
    "unauthorized: device token invalid",
    "unauthorized: invite invalid",
    "unauthorized: too many failed attempts",
    "device identity required",
    "device identity mismatch",
    "device signature invalid",
    "device signature expired",
    "pairing required",
    "device revoked",
}
HTTP_ONLY = {
    Denial.CREDENTIALS_MISSING,
    Denial.ROLE_FORBIDDEN,
    Denial.CROSS_SITE_WRITE,
    Denial.METRICS_TOKEN_MISMATCH,
}


def test_socket_close_reasons_are_exactly_the_designed_ones() -> None:
    socket_reasons = {denial.reason for denial in Denial if denial not in HTTP_ONLY}
    assert socket_reasons == DESIGN_CLOSE_REASONS


def test_metric_labels_are_unique_bounded_snake_case() -> None:
    labels = [denial.metric_label for denial in Denial]
    assert len(set(labels)) == len(labels)
    assert all(re.fullmatch(r"[a-z][a-z_]{2,40}", label) for label in labels)


def test_only_guesses_at_a_secret_count_towards_the_lockout() -> None:
    counted = {denial for denial in Denial if denial.counts_as_failure}
    assert counted == {
        Denial.GATEWAY_TOKEN_MISMATCH,
        Denial.DEVICE_TOKEN_INVALID,
        Denial.INVITE_INVALID,
        Denial.DEVICE_SIGNATURE_INVALID,
        Denial.METRICS_TOKEN_MISMATCH,
    }


@pytest.mark.parametrize("denial", list(Denial), ids=lambda d: d.name)
def test_every_denial_tells_what_to_do_next(denial: Denial) -> None:
    step = denial.next_step
    assert step.endswith(".") and len(step) > 20
    assert Denial.from_reason(denial.reason) is denial


def test_pairing_required_points_at_the_approve_command() -> None:
    assert "edge devices approve <REQUEST>" in Denial.PAIRING_REQUIRED.next_step


def test_only_the_role_and_cross_site_refusals_are_forbidden_over_http() -> None:
    forbidden = {Denial.ROLE_FORBIDDEN, Denial.CROSS_SITE_WRITE}
    assert {d.http_status for d in forbidden} == {403}
    assert {d.http_status for d in Denial if d not in forbidden} == {401}


def test_unknown_close_reason_is_not_a_denial() -> None:
    assert Denial.from_reason("going away") is None
