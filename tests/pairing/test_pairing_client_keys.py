"""Lockouts and pending caps count per client key (issue 14, attacks 5 and 6), on every store.

An IPv6 subscriber holds a whole /64: keyed by full address it had 2**64
budgets of guesses and filled the global pending cap alone. Keyed by prefix,
it is one client. A local client presents no secret, so it is never locked out,
even when a page that shares its address (DNS rebinding) is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from pairing_support import Client, FakeClock

from edge.gateway.protocol import connect_attempt
from edge.net import client_key
from edge.pairing.service import Admitted, Denied, PairingPolicy, PairingService, RateLimitPolicy
from edge.pairing.store import PendingCapHit
from edge.pairing.store import sqlite as sqlite_store
from edge.refusals import Denial

SUBNET = "2001:db8:1:2"


def _denial(outcome: Admitted | Denied) -> Denial | None:
    return outcome.denial if isinstance(outcome, Denied) else None


@pytest.mark.parametrize(
    ("ip", "prefix", "key"),
    [
        ("198.51.100.7", 64, "198.51.100.7"),
        ("::ffff:198.51.100.7", 64, "198.51.100.7"),
        ("2001:db8:1:2::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
        ("2001:db8:1:2::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2::1", 128, "2001:db8:1:2::1"),
        ("::1", 64, "::/64"),
        (None, 64, "unknown"),
        ("not an address", 64, "unknown"),
    ],
)
def test_client_key_is_ipv4_address_or_ipv6_prefix(ip: str | None, prefix: int, key: str) -> None:
    assert client_key(ip, prefix) == key


def test_rate_limit_policy_refuses_a_prefix_out_of_range() -> None:
    with pytest.raises(ValueError, match="ipv6_prefix must be from 32 to 128"):
        RateLimitPolicy(ipv6_prefix=16)


def test_guesses_from_rotating_addresses_in_one_64_are_locked_out(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(rate_limit=RateLimitPolicy(10, 60, 300)))
    outcomes: list[Denial | None] = []
    for number in range(60):
        guesser = Client(service, clock, ip=f"{SUBNET}:{number:x}:{number:x}::{number + 1:x}")
        outcomes.append(_denial(guesser.connect({"token": f"guess-{number}"})))
        clock.advance(0.5)
    assert outcomes[:10] == [Denial.GATEWAY_TOKEN_MISMATCH] * 10
    assert outcomes[10:] == [Denial.RATE_LIMITED] * 50
    neighbour = Client(service, clock, ip="2001:db8:1:3::1")
    assert _denial(neighbour.with_gateway_token()) is Denial.PAIRING_REQUIRED


def test_ipv4_mapped_guesses_share_the_ipv4_clients_lockout(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(rate_limit=RateLimitPolicy(3, 60, 300)))
    for spelling in ("203.0.113.9", "::ffff:203.0.113.9", "::ffff:cb00:7109"):
        Client(service, clock, ip=spelling).connect({"token": "wrong"})
    assert service.lockout_remaining("203.0.113.9") > 0
    assert _denial(Client(service, clock, ip="203.0.113.9").with_gateway_token()) is (
        Denial.RATE_LIMITED
    )


def test_one_64_cannot_fill_the_global_pending_cap_beyond_its_own(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    policy = PairingPolicy(max_pending=20, max_pending_per_client=4)
    service = make_service(policy)
    asked = [
        Client(service, clock, ip=f"{SUBNET}::{number + 1:x}").with_gateway_token()
        for number in range(30)
    ]
    opened = [o for o in asked if isinstance(o, Denied) and o.request is not None]
    capped = [o for o in asked if isinstance(o, Denied) and o.request is None]
    assert len(opened) == 4
    assert len(capped) == 26
    assert all("for this address" in o.detail for o in capped)
    assert {o.request.client_key for o in opened if o.request} == {f"{SUBNET}::/64"}
    others = [
        Client(service, clock, ip=f"2001:db8:2:{number:x}::1").with_gateway_token()
        for number in range(4)
    ]
    assert all(isinstance(o, Denied) and o.request is not None for o in others)


def test_local_client_is_never_locked_out_by_guesses_from_its_own_address(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    """A rebinding page on 127.0.0.1 guesses and is locked out; the operator's dashboard is not."""
    service = make_service(PairingPolicy(rate_limit=RateLimitPolicy(10, 60, 300)))
    page = Client(service, clock, ip="127.0.0.1")
    for number in range(12):
        page.connect({"token": f"guess-{number}"})
    assert service.lockout_remaining("127.0.0.1") > 0
    assert _denial(page.with_gateway_token()) is Denial.RATE_LIMITED
    operator = Client(service, clock, ip="127.0.0.1")
    for number in range(10):
        outcome = operator.connect({"token": f"bad-{number}"}, local=True, role="admin")
        assert isinstance(outcome, Admitted)
    admitted = operator.connect({}, local=True, role="admin")
    assert isinstance(admitted, Admitted) and admitted.device.role.value == "admin"


def test_local_clients_failures_are_not_counted(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    """Even refusals of a local client (a forged signature) feed no lockout of its address."""
    service = make_service(PairingPolicy(rate_limit=RateLimitPolicy(3, 60, 300)))
    local = Client(service, clock, ip="127.0.0.1")
    for _ in range(5):
        frame = local.frame("nonce-a", auth={})
        outcome = service.connect(
            attempt=connect_attempt(frame),
            nonce="nonce-b",
            client_ip="127.0.0.1",
            local=True,
            user_agent=None,
        )
        assert _denial(outcome) is Denial.DEVICE_SIGNATURE_INVALID
    assert service.lockout_remaining("127.0.0.1") == 0.0


def test_a_schema_1_sqlite_store_migrates_its_pending_requests_under_their_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "edge.sqlite3"
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_store, "MIGRATIONS", sqlite_store.MIGRATIONS[:1])
        patch.setattr(sqlite_store, "SCHEMA_VERSION", 1)
        old = sqlite_store.SqliteStore(path)
        old.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO requests (id, device_id, public_key, name, client_ip, user_agent, role, "
            "reason, created_at, expires_at) VALUES ('K7QF-2M9D', ?, 'key', 'old', "
            "'198.51.100.4', NULL, 'user', 'not-paired', 1.0, 1e12)",
            ("0" * 64,),
        )
    store = sqlite_store.SqliteStore(path)
    try:
        (request,) = store.list_requests(2.0)
        assert request.client_key == "198.51.100.4"
        candidate = replace(request, id="AAAA-BBBB", device_id="1" * 64, created_at=2.0)
        capped = store.open_request(candidate, max_pending=10, max_pending_per_client=1)
        assert capped == PendingCapHit("max_pending_per_client", 1)
    finally:
        store.close()
