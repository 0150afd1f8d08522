"""Roles and approval rules."""

from __future__ import annotations

from dataclasses import replace

from edge.pairing.models import (
    PAIRED,
    REVOKED,
    Device,
    Invite,
    Role,
    approval_role,
    approved_device,
)

NOW = 1_700_000_000.0


def _device(role: Role = Role.USER, status: str = PAIRED) -> Device:
    return Device(
        id="ab" * 32,
        public_key="key",
        name="operator renamed me",
        role=role,
        status=status,
        token_hash="f" * 64,
        created_at=NOW - 1000,
        approved_by="cli",
        last_seen_at=NOW - 10,
        last_ip="192.0.2.1",
        revoked_at=NOW - 5 if status == REVOKED else None,
    )


def test_admin_covers_user_but_not_the_reverse() -> None:
    assert Role.ADMIN.covers(Role.USER) and Role.ADMIN.covers(Role.ADMIN)
    assert Role.USER.covers(Role.USER) and not Role.USER.covers(Role.ADMIN)


def test_role_parse_is_exact() -> None:
    assert Role.parse("admin") is Role.ADMIN
    assert Role.parse("Admin") is None
    assert Role.parse(None) is None
    assert Role.parse(["user"]) is None


def test_approval_without_choice_never_downgrades_a_paired_device() -> None:
    admin = _device(Role.ADMIN)
    assert approval_role(admin, Role.USER, None) is Role.ADMIN
    assert approval_role(admin, Role.USER, Role.USER) is Role.USER  # explicit operator choice
    assert approval_role(_device(Role.ADMIN, REVOKED), Role.USER, None) is Role.USER
    assert approval_role(None, Role.ADMIN, None) is Role.ADMIN


def test_approving_a_paired_device_keeps_its_name_token_and_history() -> None:
    existing = _device()
    approved = approved_device(
        existing,
        device_id=existing.id,
        public_key="key",
        name="name from request",
        role=Role.ADMIN,
        approved_by="device:abababababab (admin phone)",
        now=NOW,
    )
    assert approved == replace(
        existing, role=Role.ADMIN, approved_by="device:abababababab (admin phone)"
    )


def test_approving_a_revoked_device_starts_afresh_without_its_old_token() -> None:
    approved = approved_device(
        _device(status=REVOKED),
        device_id="ab" * 32,
        public_key="key",
        name="new name",
        role=Role.USER,
        approved_by="cli",
        now=NOW,
    )
    assert approved.status == PAIRED
    assert approved.token_hash is None and approved.revoked_at is None
    assert approved.created_at == NOW and approved.name == "new name"


def test_reprs_never_show_token_or_code_hashes() -> None:
    device = _device()
    invite = Invite("K7QF-2M9D", "c" * 64, Role.USER, None, NOW, NOW + 60, "cli")
    assert "f" * 64 not in repr(device)
    assert "c" * 64 not in repr(invite)


def test_invite_is_usable_once_and_until_it_expires() -> None:
    invite = Invite("K7QF-2M9D", "c" * 64, Role.USER, None, NOW, NOW + 60, "cli")
    assert invite.usable(NOW + 59)
    assert not invite.usable(NOW + 60)
    assert not replace(invite, used_at=NOW + 1).usable(NOW + 2)
