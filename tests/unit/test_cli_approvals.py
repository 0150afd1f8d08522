"""`edge devices approve` shows what it grants and grants user unless told; `edge auth` lists
and lifts lockouts. Offline: the commands work on the store, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.pairing.models import Role, fingerprint
from tests.unit.test_cli import ask, config_file, run, service_for  # noqa: F401  (fixture)


def test_approve_shows_the_request_and_grants_user_to_a_device_asking_for_admin(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,  # noqa: F811
) -> None:
    service = service_for(config_file)
    device, request = ask(service, "kiosk", role="admin")
    code, out, _ = run(capsys, "devices", "approve", request.id, "-c", str(config_file))
    assert code == 0
    assert "asks for:    admin" in out and "198.51.100.7" in out
    assert fingerprint(device.id) in out
    assert "as user" in out and "--role admin" in out
    assert service.find_device(device.id).role is Role.USER


def test_approve_with_role_admin_grants_admin(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,  # noqa: F811
) -> None:
    service = service_for(config_file)
    device, request = ask(service, "ops", role="admin")
    code, out, _ = run(
        capsys, "devices", "approve", request.id, "--role", "admin", "-c", str(config_file)
    )
    assert code == 0 and "as admin" in out
    assert service.find_device(device.id).role is Role.ADMIN


def test_approve_latest_only_previews_and_prints_the_exact_command(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,  # noqa: F811
) -> None:
    service = service_for(config_file)
    ask(service, "older")
    device, newest = ask(service, "newest", ip="198.51.100.99", role="admin")
    code, out, _ = run(capsys, "devices", "approve", "--latest", "-c", str(config_file))
    assert code == 0 and "Nothing was approved" in out
    assert f"edge devices approve {newest.id}\n" in out
    assert f"edge devices approve {newest.id} --role admin" in out
    assert fingerprint(device.id) in out and "198.51.100.99" in out
    assert service.list_devices() == [] and len(service.list_requests()) == 2
    code, out, _ = run(capsys, "devices", "approve", "--latest", "--json", "-c", str(config_file))
    preview = json.loads(out)
    assert preview["request"]["id"] == newest.id
    assert preview["command"] == f"edge devices approve {newest.id}"
    assert service.list_devices() == []


def test_auth_lockouts_lists_and_unlock_lifts_with_an_audit_event(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,  # noqa: F811
) -> None:
    service = service_for(config_file)
    assert run(capsys, "auth", "lockouts", "-c", str(config_file))[1].strip() == (
        "no address is locked out"
    )
    for _ in range(service.policy.rate_limit.failures):
        service.record_failure("203.0.113.9")
    code, out, _ = run(capsys, "auth", "lockouts", "--json", "-c", str(config_file))
    assert code == 0 and [r["client"] for r in json.loads(out)["lockouts"]] == ["203.0.113.9"]
    code, out, _ = run(capsys, "auth", "unlock", "203.0.113.9", "-c", str(config_file))
    assert code == 0 and "lifted the lockout of 203.0.113.9" in out
    assert service.store.locked_until("203.0.113.9") == 0.0
    unlocked = service.events_after(0)[-1]
    assert unlocked.type == "auth.unlocked" and unlocked.data["actor"] == "cli"
    code, _, err = run(capsys, "auth", "unlock", "203.0.113.9", "-c", str(config_file))
    assert code == 1 and "not locked out" in err
    assert run(capsys, "auth", "unlock", "not-an-address", "-c", str(config_file))[0] == 1
