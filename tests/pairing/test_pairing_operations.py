"""Operator actions, HTTP credentials, caches across workers, sweeping and the audit trail."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from pairing_support import Client, FakeClock

from edge.pairing.models import Device, Role
from edge.pairing.service import (
    AlreadyResolved,
    Denied,
    InvalidValue,
    NotFound,
    PairingPolicy,
    PairingService,
    RateLimitPolicy,
)
from edge.pairing.store import Store
from edge.refusals import Denial

MakeClient = Callable[..., Client]


def _request_id(client: Client, role: str = "user") -> str:
    asked = client.with_gateway_token(role)
    assert isinstance(asked, Denied) and asked.request is not None
    return asked.request.id


# -- approve / reject ---------------------------------------------------------------------------


def test_approve_accepts_the_id_as_people_type_it(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client(name="kiosk")
    request_id = _request_id(client)
    device = service.approve(request_id.lower().replace("-", ""), actor="cli")
    assert (device.id, device.name, device.role, device.approved_by) == (
        client.device_id,
        "kiosk",
        Role.USER,
        "cli",
    )
    assert device.token_hash is None  # the token is issued on the device's next connect
    assert service.list_devices() == [device]


def test_approve_may_grant_another_role(service: PairingService, make_client: MakeClient) -> None:
    device = service.approve(_request_id(make_client()), role=Role.ADMIN, actor="cli")
    assert device.role is Role.ADMIN


def test_second_approval_reports_who_resolved_it(
    service: PairingService, make_client: MakeClient
) -> None:
    request_id = _request_id(make_client())
    service.approve(request_id, actor="device:0123456789ab (ops)")
    with pytest.raises(AlreadyResolved, match=r"already approved by device:0123456789ab \(ops\)"):
        service.approve(request_id, actor="cli")
    with pytest.raises(AlreadyResolved, match="already approved"):
        service.reject(request_id, actor="cli")


def test_reject_returns_the_request_and_pairs_nothing(
    service: PairingService, make_client: MakeClient
) -> None:
    request_id = _request_id(make_client())
    rejected = service.reject(request_id, actor="cli")
    assert rejected.id == request_id
    assert service.list_devices() == [] and service.list_requests() == []


@pytest.mark.parametrize(
    ("request_id", "error", "message"),
    [
        ("K7QF-2M9D", NotFound, "no pairing request K7QF-2M9D"),
        ("not an id", InvalidValue, "not a pairing request id"),
        ("", InvalidValue, "look like K7QF-2M9D"),
    ],
)
def test_unknown_or_malformed_request_ids_are_explained(
    service: PairingService, request_id: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        service.approve(request_id, actor="cli")


def test_approve_refuses_a_role_that_is_not_a_role(
    service: PairingService, make_client: MakeClient
) -> None:
    with pytest.raises(InvalidValue, match="role must be"):
        service.approve(_request_id(make_client()), role="root", actor="cli")  # type: ignore[arg-type]


def test_approve_latest_takes_the_newest_request(
    service: PairingService, make_client: MakeClient, clock: FakeClock
) -> None:
    with pytest.raises(NotFound, match="no pending pairing requests"):
        service.approve_latest(actor="cli")
    older, newer = make_client(), make_client()
    _request_id(older)
    clock.advance(1)
    _request_id(newer)
    assert service.approve_latest(actor="cli").id == newer.device_id
    assert [r.device_id for r in service.list_requests()] == [older.device_id]


# -- revoke / rename / rotate -------------------------------------------------------------------


def test_revoke_by_unique_prefix(service: PairingService, make_client: MakeClient) -> None:
    client = make_client()
    token = client.pair().device_token
    revoked = service.revoke(client.device_id[:8].upper(), actor="cli")
    assert revoked.status == "revoked" and revoked.revoked_at is not None
    assert service.authenticate_token(token) is Denial.DEVICE_REVOKED
    assert service.list_devices() == []
    assert [d.id for d in service.list_devices(include_revoked=True)] == [client.device_id]
    with pytest.raises(AlreadyResolved, match="already revoked"):
        service.revoke(client.device_id, actor="cli")


def test_revoke_also_rejects_the_devices_pending_request(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    client.pair("user")
    upgrade = _request_id(client, "admin")
    service.revoke(client.device_id, actor="cli")
    with pytest.raises(AlreadyResolved, match="already rejected"):
        service.approve(upgrade, actor="cli")


def _paired_device(service: PairingService, device_id: str) -> Device:
    device = service.store.get_device(device_id)
    assert device is not None
    return device


def test_ambiguous_prefix_lists_the_candidates(
    service: PairingService, store: Store, clock: FakeClock
) -> None:
    for suffix in ("1", "2"):
        device = Device(
            id="abcdef" + suffix * 58,
            public_key="k",
            name=f"twin {suffix}",
            role=Role.USER,
            status="paired",
            token_hash=None,
            created_at=clock.now,
            approved_by="cli",
        )
        store.pair_device(device, actor="test", now=clock.now)
    with pytest.raises(InvalidValue, match=r"matches several devices .*twin 1.*twin 2"):
        service.revoke("abcdef", actor="cli")
    with pytest.raises(NotFound, match="no device id starts with 123456"):
        service.revoke("123456", actor="cli")
    with pytest.raises(InvalidValue, match="first 6\\+ hex characters"):
        service.revoke("abc", actor="cli")
    with pytest.raises(NotFound, match="there is no device"):
        service.revoke("f" * 64, actor="cli")


def test_rename_validates_and_records_the_previous_name(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client(name="old")
    client.pair()
    renamed = service.rename(client.device_id, "  Kitchen tablet ", actor="cli")
    assert renamed.name == "Kitchen tablet"
    event = service.events_after(0, 1000)[-1]
    assert event.type == "device.renamed"
    assert (event.data["name"], event.data["previous_name"]) == ("Kitchen tablet", "old")
    for bad in ("", "   ", "x" * 65, "tab\there"):
        with pytest.raises(InvalidValue, match="1-64 printable"):
            service.rename(client.device_id, bad, actor="cli")


def test_rotation_invalidates_the_old_token_and_never_changes_the_role(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    old = client.pair("user").device_token
    new = service.rotate_token(client.device_id, actor="cli")
    assert new != old
    assert service.authenticate_token(old) is Denial.DEVICE_TOKEN_INVALID
    device = service.authenticate_token(new)
    assert isinstance(device, Device) and device.role is Role.USER


def test_a_store_read_that_races_a_revocation_does_not_cache_the_device(
    service: PairingService, store: Store, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    token = client.pair("user").device_token
    real = store.device_for_token
    reads: list[str] = []

    def read_then_revoke(token_hash: str) -> Device | None:
        device = real(token_hash)  # read while still paired ...
        reads.append(token_hash)
        if len(reads) == 1:
            service.revoke(client.device_id, actor="cli")  # ... and revoked before the cache write
        return device

    monkeypatch.setattr(store, "device_for_token", read_then_revoke)
    raced = service.authenticate_token(token)
    assert isinstance(raced, Device)  # that one request raced the revocation
    assert service.authenticate_token(token) is Denial.DEVICE_REVOKED  # the next one does not
    assert len(reads) == 2  # it was asked again, not answered from a stale cache


def test_revoked_device_cannot_be_given_a_new_token(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    client.pair()
    service.revoke(client.device_id, actor="cli")
    with pytest.raises(InvalidValue, match="is revoked; it must pair again"):
        service.rotate_token(client.device_id, actor="cli")


# -- invites ------------------------------------------------------------------------------------


def test_invite_code_is_long_enough_and_only_its_hash_is_kept(service: PairingService) -> None:
    invite, code = service.create_invite(role=Role.USER, name=None, ttl=60, actor="cli")
    assert len(code) >= 22  # >= 128 bits of base64url
    assert code not in repr(invite) and invite.code_hash != code
    assert service.list_invites() == [invite]
    assert invite.created_by == "cli" and invite.expires_at == invite.created_at + 60


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 0}, "between 1 second and 7 days"),
        ({"ttl": float("inf")}, "between 1 second and 7 days"),
        ({"ttl": 31 * 86_400}, "between 1 second and 7 days"),
        ({"name": "\x00"}, "1-64 printable"),
        ({"role": "admin"}, "role must be"),
    ],
)
def test_bad_invites_are_refused(
    service: PairingService, kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"role": Role.USER, "name": None, "ttl": 60, "actor": "cli"}
    arguments.update(kwargs)
    with pytest.raises(InvalidValue, match=message):
        service.create_invite(**arguments)  # type: ignore[arg-type]


def test_cancel_invite(service: PairingService) -> None:
    invite, _ = service.create_invite(role=Role.USER, name=None, ttl=60, actor="cli")
    assert service.cancel_invite(invite.id.lower(), actor="cli") == invite
    assert service.list_invites() == []
    with pytest.raises(NotFound, match="no unused invite"):
        service.cancel_invite(invite.id, actor="cli")
    with pytest.raises(InvalidValue, match="not an invite id"):
        service.cancel_invite("?", actor="cli")


# -- HTTP credentials and caches ------------------------------------------------------------------


def test_authenticate_token_refuses_garbage(service: PairingService) -> None:
    for token in ("", "x" * 1000, "unknown-token"):
        assert service.authenticate_token(token) is Denial.DEVICE_TOKEN_INVALID
    assert service.authenticate_token(None) is Denial.DEVICE_TOKEN_INVALID  # type: ignore[arg-type]


def test_revocation_by_another_worker_reaches_this_one_through_events(
    make_service: Callable[..., PairingService],
    open_store_again: Callable[[], Store],
    clock: FakeClock,
) -> None:
    """Worker A caches the device; the CLI (its own store handle) revokes it."""
    worker = make_service()
    cli = make_service(on=open_store_again())
    client = Client(worker, clock)
    token = client.pair().device_token
    assert isinstance(worker.authenticate_token(token), Device)  # now cached
    seen = worker.latest_seq()
    cli.revoke(client.device_id, actor="cli")
    events = worker.wait_events(seen, timeout=5)
    assert [e.type for e in events] == ["device.revoked"]
    worker.apply_events(events)
    assert worker.authenticate_token(token) is Denial.DEVICE_REVOKED


def test_cached_device_is_reread_after_the_cache_ttl_even_without_events(
    make_service: Callable[..., PairingService],
    open_store_again: Callable[[], Store],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edge.pairing.caches as service_module

    worker = make_service()
    cli = make_service(on=open_store_again())
    client = Client(worker, clock)
    token = client.pair().device_token
    worker.authenticate_token(token)
    cli.revoke(client.device_id, actor="cli")
    monkeypatch.setattr(service_module, "TOKEN_CACHE_TTL", 0.0)
    assert worker.authenticate_token(token) is Denial.DEVICE_REVOKED


def test_lockout_event_from_another_worker_is_applied(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    policy = PairingPolicy(rate_limit=RateLimitPolicy(1, 60, 300))
    worker_a, worker_b = make_service(policy), make_service(policy)
    assert worker_a.record_failure("203.0.113.1")
    worker_b.apply_events(worker_b.events_after(0))
    assert worker_b.lockout_remaining("203.0.113.1") == pytest.approx(300)


def test_unlocked_address_costs_one_store_read_per_recheck_interval(
    service: PairingService, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge.pairing.caches as service_module

    monkeypatch.setattr(service_module, "LOCKOUT_RECHECK", 3600.0)
    calls: list[str] = []
    real = store.locked_until

    def counting(client: str) -> float:
        calls.append(client)
        return real(client)

    monkeypatch.setattr(store, "locked_until", counting)
    for _ in range(100):
        assert service.lockout_remaining("192.0.2.1") == 0.0
    assert calls == ["192.0.2.1"]
    for _ in range(service.policy.rate_limit.failures):  # this process's own lockout ...
        service.record_failure("192.0.2.1")
    assert service.lockout_remaining("192.0.2.1") > 0  # ... is known without a read
    monkeypatch.setattr(service_module, "LOCKOUT_RECHECK", 0.0)
    service.lockout_remaining("192.0.2.2")
    service.lockout_remaining("192.0.2.2")
    assert calls == ["192.0.2.1", "192.0.2.2", "192.0.2.2"]


# -- sweeping, last seen, counts -------------------------------------------------------------------


def test_touches_are_written_in_one_batch(
    service: PairingService, make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(ip="198.51.100.77")
    token = client.pair().device_token
    service.flush_touches()
    clock.advance(30)
    assert isinstance(service.authenticate_token(token, client_ip="198.51.100.78"), Device)
    assert _paired_device(service, client.device_id).last_ip == "198.51.100.77"
    service.flush_touches()
    device = _paired_device(service, client.device_id)
    assert (device.last_seen_at, device.last_ip) == (clock.now, "198.51.100.78")


def test_idle_devices_expire_with_an_event(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(device_idle_expiry=3600))
    idle, active = Client(service, clock), Client(service, clock)
    idle_token = idle.pair().device_token
    active.pair()
    clock.advance(3000)
    active.with_device_token()
    clock.advance(1000)
    service.sweep()
    assert [d.id for d in service.list_devices()] == [active.device_id]
    assert service.authenticate_token(idle_token) is Denial.DEVICE_TOKEN_INVALID
    expired = [e for e in service.events_after(0, 1000) if e.type == "device.expired"]
    assert [e.data["device_id"] for e in expired] == [idle.device_id]


def test_sweep_without_work_writes_no_events(service: PairingService) -> None:
    service.sweep()
    service.sweep()
    assert service.latest_seq() == 0


def test_counts_report_pending_requests_and_devices_by_role(
    service: PairingService, make_client: MakeClient
) -> None:
    assert service.counts() == (0, {"admin": 0, "user": 0})
    make_client().pair("admin")
    make_client().pair("user")
    make_client().pair("user")
    _request_id(make_client())
    assert service.counts() == (1, {"admin": 1, "user": 2})


# -- the audit trail ------------------------------------------------------------------------------


def test_every_change_is_an_event_with_its_actor_and_no_secret(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    token = client.pair().device_token
    rotated = service.rotate_token(client.device_id, actor="cli")
    service.rename(client.device_id, "renamed", actor="cli")
    invite, code = service.create_invite(role=Role.USER, name=None, ttl=60, actor="cli")
    make_client().connect({"invite": code})
    other, _ = service.create_invite(role=Role.USER, name=None, ttl=60, actor="cli")
    service.cancel_invite(other.id, actor="cli")
    service.revoke(client.device_id, actor="cli")
    events = service.events_after(0, 1000)
    assert [e.type for e in events] == [
        "pairing.requested",
        "pairing.resolved",
        "device.token_rotated",  # first token issued on reconnect
        "device.token_rotated",
        "device.renamed",
        "invite.created",
        "invite.used",
        "invite.created",
        "invite.cancelled",
        "device.revoked",
    ]
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    text = json.dumps([e.data for e in events])
    for secret in (token, rotated, code, invite.code_hash):
        assert secret not in text
    device = _paired_device(service, client.device_id)
    assert device.token_hash is not None and device.token_hash not in text
    assert all("token_hash" not in e.data and "code" not in e.data for e in events)


def test_gateway_token_can_be_replaced_at_run_time(service: PairingService) -> None:
    service.set_gateway_token("the-next-token")
    assert service.check_gateway_token("the-next-token")
    assert not service.check_gateway_token("gw_test_token_0123456789abcdefghijklmnopq")
    with pytest.raises(InvalidValue, match="non-empty"):
        service.set_gateway_token("  ")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RateLimitPolicy(failures=0), "failures must be at least 1"),
        (lambda: RateLimitPolicy(window=-1), "window must be a positive"),
        (lambda: PairingPolicy(request_ttl=float("nan")), "request_ttl must be a positive"),
        (lambda: PairingPolicy(max_pending=0), "max_pending must be at least 1"),
        (lambda: PairingPolicy(device_idle_expiry=0), "device_idle_expiry must be a positive"),
    ],
)
def test_bad_policies_are_refused_naming_the_key(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
