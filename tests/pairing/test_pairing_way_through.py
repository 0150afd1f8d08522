"""The device's way through, on both stores: lockouts that spare paired devices and can be
lifted, declines that stick, requests that really expire, and approvals that grant no more
than the operator named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from pairing_support import START_TIME, Client, FakeClock

from edge.pairing.codes import new_request_id
from edge.pairing.models import ROLE_UPGRADE, PairingRequest, Role, approval_role
from edge.pairing.service import (
    Admitted,
    AlreadyResolved,
    Denied,
    NotFound,
    PairingPolicy,
    PairingService,
    RateLimitPolicy,
)
from edge.pairing.store import Declined, Store
from edge.refusals import Denial

NOW = START_TIME
THREE_TRIES = PairingPolicy(rate_limit=RateLimitPolicy(3, 60, 300))


def _request(number: int = 1, *, now: float = NOW, ttl: float = 300) -> PairingRequest:
    return PairingRequest(
        id=new_request_id(),
        device_id=f"{number:064x}",
        public_key=f"key-{number}",
        name=f"device {number}",
        client_ip="198.51.100.1",
        user_agent="agent",
        role=Role.USER,
        reason="not-paired",
        created_at=now,
        expires_at=now + ttl,
    )


def _denial(outcome: object) -> Denial | None:
    return outcome.denial if isinstance(outcome, Denied) else None


# -- lockouts: the guesser is refused, a paired device is not --------------------------------------


def test_a_lockout_never_refuses_a_valid_device_token(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(THREE_TRIES)
    paired = Client(service, clock, ip="203.0.113.7", name="paired laptop")
    paired.pair()
    guesser = Client(service, clock, ip="203.0.113.7", name="guesser")
    for _ in range(3):
        guesser.connect({"token": "guess"})
    assert service.lockout_remaining("203.0.113.7") > 0
    # The same address: the guesser is refused, the paired device's token still opens the door.
    assert _denial(guesser.with_gateway_token()) is Denial.RATE_LIMITED
    assert _denial(guesser.connect({"deviceToken": "x" * 43})) is Denial.RATE_LIMITED
    assert not isinstance(paired.with_device_token(), Denied)
    assert service.authenticate_token(paired.device_token or "") == service.find_device(
        paired.device_id
    )


def test_a_counted_failure_says_how_many_tries_are_left(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(THREE_TRIES)
    client = Client(service, clock, ip="203.0.113.8")
    first = client.connect({"token": "typo"})
    assert isinstance(first, Denied) and first.tries_left == 2
    assert service.attempts("203.0.113.8").tries_left == 2
    client.connect({"token": "typo"})
    last = client.connect({"token": "typo"})
    assert isinstance(last, Denied) and last.tries_left == 0 and last.retry_after == 300
    assert service.attempts("203.0.113.8").locked_for == pytest.approx(300)


def test_unlock_lifts_a_lockout_for_every_process_and_is_an_event(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    worker_a, worker_b = make_service(THREE_TRIES), make_service(THREE_TRIES)
    guesser = Client(worker_a, clock, ip="203.0.113.9")
    for _ in range(3):
        guesser.connect({"token": "guess"})
    assert worker_b.lockout_remaining("203.0.113.9") > 0  # worker b has it cached now
    assert [key for key, _, _ in worker_a.lockouts()] == ["203.0.113.9"]
    start = worker_a.latest_seq()
    key, until = worker_a.unlock("203.0.113.9", actor="cli")
    assert key == "203.0.113.9" and until == pytest.approx(NOW + 300)
    events = worker_a.events_after(start)
    assert [(e.type, e.data["client"], e.data["actor"]) for e in events] == [
        ("auth.unlocked", "203.0.113.9", "cli")
    ]
    worker_b.apply_events(events)  # what the running gateway's event watcher does
    assert worker_b.lockout_remaining("203.0.113.9") == 0.0
    assert worker_a.lockouts() == []
    guesser.service = worker_b
    assert _denial(guesser.with_gateway_token()) is Denial.PAIRING_REQUIRED  # a fresh budget
    with pytest.raises(NotFound, match="not locked out"):
        worker_a.unlock("203.0.113.9", actor="cli")


def test_unlock_takes_any_address_of_an_ipv6_prefix(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(THREE_TRIES)
    for _ in range(3):
        Client(service, clock, ip="2001:db8:1:2::77").connect({"token": "guess"})
    assert [key for key, _, _ in service.lockouts()] == ["2001:db8:1:2::/64"]
    assert service.unlock("2001:db8:1:2::1", actor="cli")[0] == "2001:db8:1:2::/64"


# -- declines stick, requests expire -----------------------------------------------------------------


def test_a_declined_device_cannot_reopen_a_request_until_its_cool_down_ends(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(decline_cooldown=600))
    client = Client(service, clock)
    asked = client.with_gateway_token()
    assert isinstance(asked, Denied) and asked.request is not None
    service.reject(asked.request.id, actor="cli")
    for _ in range(5):  # the page's re-checks
        again = client.with_gateway_token()
        assert isinstance(again, Denied) and again.declined
        assert again.request is not None and again.request.id == asked.request.id
        clock.advance(2)
    assert service.list_requests() == []
    assert isinstance(again, Denied) and again.retry_after == pytest.approx(592)
    clock.advance(600)
    fresh = client.with_gateway_token()
    assert isinstance(fresh, Denied) and not fresh.declined and fresh.request is not None
    assert fresh.request.id != asked.request.id


def test_re_checking_does_not_keep_a_request_alive(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(request_ttl=60))
    client = Client(service, clock)
    asked = client.with_gateway_token()
    assert isinstance(asked, Denied) and asked.request is not None
    for _ in range(20):
        clock.advance(2)
        again = client.with_gateway_token()
        assert isinstance(again, Denied) and again.request is not None
        assert again.request.expires_at == asked.request.expires_at
    clock.advance(21)
    with pytest.raises(NotFound, match="expired"):
        service.approve(asked.request.id, actor="cli")


def test_the_store_declines_within_the_cool_down_and_keeps_the_expiry(store: Store) -> None:
    request = store.open_request(_request(), max_pending=10, max_pending_per_client=10)
    assert isinstance(request, PairingRequest)
    kept = store.open_request(
        replace(_request(), created_at=NOW + 10, expires_at=NOW + 310),
        max_pending=10,
        max_pending_per_client=10,
        renew_expiry=False,
    )
    assert isinstance(kept, PairingRequest) and kept.expires_at == NOW + 300
    store.resolve_request(request.id, approve=False, role=None, actor="ops", now=NOW + 20)
    again = _request(now=NOW + 30)
    declined = store.open_request(
        again, max_pending=10, max_pending_per_client=10, decline_cooldown=100
    )
    assert isinstance(declined, Declined)
    assert declined.request.id == request.id and declined.declined_by == "ops"
    assert declined.until == NOW + 120
    assert store.list_requests(NOW + 30) == []
    later = store.open_request(
        _request(now=NOW + 121), max_pending=10, max_pending_per_client=10, decline_cooldown=100
    )
    assert isinstance(later, PairingRequest) and later.id != request.id


def test_store_lockouts_are_listed_and_lifted(store: Store) -> None:
    for _ in range(2):
        store.record_failure("203.0.113.1", now=NOW, window=60, threshold=2, lockout=300)
    store.record_failure("203.0.113.2", now=NOW, window=60, threshold=2, lockout=300)
    (locked,) = store.lockouts(NOW + 1)
    assert locked.client == "203.0.113.1" and locked.locked_until == NOW + 300
    assert store.unlock("203.0.113.2", actor="cli", now=NOW + 1) is None  # counted, not locked
    assert store.unlock("203.0.113.1", actor="cli", now=NOW + 1) is not None
    assert store.lockouts(NOW + 1) == [] and store.locked_until("203.0.113.1") == 0.0
    assert store.events_after(0)[-1].type == "auth.unlocked"


# -- approvals grant what the operator named -------------------------------------------------------


def test_an_operators_plain_approval_grants_user_to_a_device_asking_for_admin(
    service: PairingService, make_client: Callable[..., Client], clock: FakeClock
) -> None:
    client = make_client()
    asked = client.with_gateway_token(role="admin")
    assert isinstance(asked, Denied) and asked.request is not None
    device = service.approve(asked.request.id, actor="cli", at_most=Role.USER)
    assert device.role is Role.USER
    clock.advance(service.policy.decline_cooldown)
    upgrade = client.with_gateway_token(role="admin")
    assert isinstance(upgrade, Denied) and upgrade.request is not None and not upgrade.declined
    assert service.approve(upgrade.request.id, role=Role.ADMIN, actor="cli").role is Role.ADMIN


def test_the_cap_on_a_plain_approval_never_demotes_a_paired_admin(
    service: PairingService, make_client: Callable[..., Client]
) -> None:
    admin = make_client()
    admin.pair(role="admin")
    device = service.find_device(admin.device_id)
    assert approval_role(device, Role.ADMIN, None, Role.USER) is Role.ADMIN
    assert approval_role(device, Role.USER, None, Role.USER) is Role.ADMIN
    assert approval_role(None, Role.ADMIN, None, Role.USER) is Role.USER
    assert approval_role(None, Role.ADMIN, Role.ADMIN, Role.USER) is Role.ADMIN
    assert approval_role(None, Role.ADMIN, None) is Role.ADMIN  # no cap: as requested


def test_deciding_a_settled_request_names_the_devices_newer_one(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(request_ttl=60))
    client = Client(service, clock)
    first = client.with_gateway_token()
    assert isinstance(first, Denied) and first.request is not None
    clock.advance(61)
    second = client.with_gateway_token()
    assert isinstance(second, Denied) and second.request is not None
    with pytest.raises(AlreadyResolved, match=f"newer request {second.request.id}"):
        service.approve(first.request.id, actor="cli")
    with pytest.raises(AlreadyResolved, match=f"newer request {second.request.id}"):
        service.reject(first.request.id, actor="cli")


def test_a_device_approved_as_user_does_not_ask_for_admin_again_by_itself(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(decline_cooldown=600))
    client = Client(service, clock)
    asked = client.with_gateway_token(role="admin")
    assert isinstance(asked, Denied) and asked.request is not None
    service.approve(asked.request.id, actor="cli", at_most=Role.USER)
    again = client.with_gateway_token(role="admin")  # the page's next check, still asking admin
    assert isinstance(again, Denied) and again.declined
    assert again.request is not None and again.request.reason == ROLE_UPGRADE
    assert service.list_requests() == []  # nothing new in the operator's queue
    assert isinstance(client.with_gateway_token(role="user"), Admitted)
