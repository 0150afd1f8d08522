"""The /ws handshake decision, driven by real Ed25519 clients."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pairing_support import GATEWAY_TOKEN, Client, FakeClock, fresh_nonce

from edge.gateway.protocol import connect_attempt
from edge.pairing.models import NOT_PAIRED, ROLE_UPGRADE, Role
from edge.pairing.service import (
    Admitted,
    Denied,
    PairingPolicy,
    PairingService,
    RateLimitPolicy,
)
from edge.pairing.store import Store
from edge.refusals import Denial

MakeClient = Callable[..., Client]

# Every refusal connect() itself can give; the rest belong to the ASGI layer.
CONNECT_DENIALS = set(Denial) - {
    Denial.ORIGIN_NOT_ALLOWED,
    Denial.HANDSHAKE_TIMEOUT,
    Denial.CREDENTIALS_MISSING,
    Denial.ROLE_FORBIDDEN,
    Denial.CROSS_SITE_WRITE,
    Denial.METRICS_TOKEN_MISMATCH,
}


def _denial(outcome: Admitted | Denied) -> Denial:
    assert isinstance(outcome, Denied), f"expected a refusal, got {outcome}"
    return outcome.denial


# -- one scenario per refusal ----------------------------------------------------------------


def _locked_out(service: PairingService, client: Client) -> Admitted | Denied:
    for _ in range(service.policy.rate_limit.failures):
        client.connect({"token": "wrong"})
    return client.with_gateway_token()


def _malformed(service: PairingService, client: Client) -> Admitted | Denied:
    frame = client.frame("n", auth={"token": GATEWAY_TOKEN, "invite": "x"})
    return client.connect(frame=frame, nonce="n")


def _no_device(service: PairingService, client: Client) -> Admitted | Denied:
    nonce = fresh_nonce()
    frame = client.frame(nonce, auth={"token": GATEWAY_TOKEN})
    del frame["device"]
    return client.connect(frame=frame, nonce=nonce)


def _foreign_id(service: PairingService, client: Client) -> Admitted | Denied:
    nonce = fresh_nonce()
    frame = client.frame(nonce, auth={"token": GATEWAY_TOKEN})
    frame["device"]["id"] = Client(service, client.clock).device_id
    return client.connect(frame=frame, nonce=nonce)


def _replayed(service: PairingService, client: Client) -> Admitted | Denied:
    captured = client.frame("nonce-of-an-earlier-connection", auth={"token": GATEWAY_TOKEN})
    return client.connect(frame=captured, nonce=fresh_nonce())


def _stale(service: PairingService, client: Client) -> Admitted | Denied:
    nonce = fresh_nonce()
    frame = client.frame(
        nonce, auth={"token": GATEWAY_TOKEN}, signed_at_ms=client.clock.ms - 121_000
    )
    return client.connect(frame=frame, nonce=nonce)


def _revoked(service: PairingService, client: Client) -> Admitted | Denied:
    client.pair()
    service.revoke(client.device_id, actor="cli")
    return client.with_device_token()


def _rotated_away(service: PairingService, client: Client) -> Admitted | Denied:
    client.pair()
    old = client.device_token
    service.rotate_token(client.device_id, actor="cli")
    return client.connect({"deviceToken": old})


def _unknown_invite(service: PairingService, client: Client) -> Admitted | Denied:
    return client.connect({"invite": "never-issued-invite-code"})


SCENARIOS: dict[str, tuple[Callable[[PairingService, Client], Admitted | Denied], Denial]] = {
    "lockout": (_locked_out, Denial.RATE_LIMITED),
    "two credentials": (_malformed, Denial.INVALID_HANDSHAKE),
    "no auth": (lambda s, c: c.connect({}), Denial.GATEWAY_TOKEN_MISSING),
    "wrong gateway token": (
        lambda s, c: c.connect({"token": "nope"}),
        Denial.GATEWAY_TOKEN_MISMATCH,
    ),
    "unknown device token": (
        lambda s, c: c.connect({"deviceToken": "unknown"}),
        Denial.DEVICE_TOKEN_INVALID,
    ),
    "rotated-away device token": (_rotated_away, Denial.DEVICE_TOKEN_INVALID),
    "unknown invite": (_unknown_invite, Denial.INVITE_INVALID),
    "no device": (_no_device, Denial.DEVICE_IDENTITY_REQUIRED),
    "id of another key": (_foreign_id, Denial.DEVICE_IDENTITY_MISMATCH),
    "replayed signature": (_replayed, Denial.DEVICE_SIGNATURE_INVALID),
    "stale signedAt": (_stale, Denial.DEVICE_SIGNATURE_EXPIRED),
    "unknown device": (lambda s, c: c.with_gateway_token(), Denial.PAIRING_REQUIRED),
    "revoked device token": (_revoked, Denial.DEVICE_REVOKED),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_connect_refusal(scenario: str, service: PairingService, make_client: MakeClient) -> None:
    produce, expected = SCENARIOS[scenario]
    assert _denial(produce(service, make_client())) is expected


def test_scenarios_cover_every_refusal_connect_can_give() -> None:
    assert {expected for _, expected in SCENARIOS.values()} == CONNECT_DENIALS


# -- the credential paths ------------------------------------------------------------------------


def test_unknown_device_with_gateway_token_gets_one_pending_request(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client(name="Alice's laptop", ip="203.0.113.5")
    first = client.with_gateway_token()
    again = client.with_gateway_token()
    assert isinstance(first, Denied) and isinstance(again, Denied)
    assert first.denial is Denial.PAIRING_REQUIRED and first.detail == NOT_PAIRED
    assert first.request is not None and again.request is not None
    assert again.request.id == first.request.id
    request = first.request
    assert (request.device_id, request.name, request.client_ip) == (
        client.device_id,
        "Alice's laptop",
        "203.0.113.5",
    )
    assert request.user_agent == "pytest-client/1.0" and request.role is Role.USER
    assert [r.id for r in service.list_requests()] == [request.id]


def test_approved_device_gets_a_fresh_token_on_each_gateway_token_connect(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    first = client.pair()
    second = client.with_gateway_token()
    assert isinstance(second, Admitted)
    assert second.device_token != first.device_token
    assert _denial(client.connect({"deviceToken": first.device_token})) is (
        Denial.DEVICE_TOKEN_INVALID
    )
    assert service.authenticate_token(first.device_token) is Denial.DEVICE_TOKEN_INVALID


def test_device_token_reconnect_keeps_the_same_token(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    token = client.pair().device_token
    again = client.with_device_token()
    assert isinstance(again, Admitted) and again.device_token == token
    assert again.device.id == client.device_id and again.device.role is Role.USER


def test_device_token_of_another_device_is_an_identity_mismatch(
    service: PairingService, make_client: MakeClient
) -> None:
    owner, thief = make_client(), make_client()
    token = owner.pair().device_token
    assert _denial(thief.connect({"deviceToken": token})) is Denial.DEVICE_IDENTITY_MISMATCH


def test_revoked_device_asking_again_makes_a_new_request(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    client.pair()
    service.revoke(client.device_id, actor="cli")
    asked = client.with_gateway_token()
    assert isinstance(asked, Denied) and asked.request is not None
    assert asked.request.reason == NOT_PAIRED


def test_role_upgrade_is_a_pairing_request_and_approval_grants_it(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    token = client.pair("user").device_token
    asked = client.with_device_token("admin")
    assert isinstance(asked, Denied) and asked.denial is Denial.PAIRING_REQUIRED
    assert asked.detail == ROLE_UPGRADE and asked.request is not None
    assert asked.request.role is Role.ADMIN and asked.request.reason == ROLE_UPGRADE
    # The device keeps working as a user meanwhile.
    assert isinstance(client.with_device_token("user"), Admitted)
    device = service.approve(asked.request.id, actor="cli")
    assert device.role is Role.ADMIN
    admitted = client.with_device_token("admin")
    assert isinstance(admitted, Admitted) and admitted.device_token == token


def test_role_upgrade_with_gateway_token_is_also_a_request(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    client.pair("user")
    asked = client.with_gateway_token("admin")
    assert isinstance(asked, Denied) and asked.detail == ROLE_UPGRADE


def test_admin_device_may_connect_as_user(service: PairingService, make_client: MakeClient) -> None:
    client = make_client()
    client.pair("admin")
    admitted = client.with_device_token("user")
    assert isinstance(admitted, Admitted) and admitted.device.role is Role.ADMIN


def test_local_client_is_auto_approved_as_admin_without_any_token(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client(ip="127.0.0.1")
    admitted = client.connect({}, local=True)
    assert isinstance(admitted, Admitted)
    assert admitted.device.role is Role.ADMIN and admitted.device.approved_by == "local"
    assert service.authenticate_token(admitted.device_token) == admitted.device
    assert [e.type for e in service.events_after(0)] == ["device.paired"]


def test_local_client_upgrades_a_paired_user_and_settles_its_request(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    client.pair("user")
    client.with_gateway_token("admin")  # a pending role-upgrade request
    admitted = client.connect({}, local=True, role="admin")
    assert isinstance(admitted, Admitted) and admitted.device.role is Role.ADMIN
    assert service.list_requests() == []


def test_local_admin_reconnect_rotates_its_token(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client(ip="127.0.0.1")
    first = client.connect({}, local=True)
    second = client.connect({}, local=True)
    assert isinstance(first, Admitted) and isinstance(second, Admitted)
    assert first.device_token != second.device_token
    assert service.authenticate_token(first.device_token) is Denial.DEVICE_TOKEN_INVALID


def test_local_client_still_needs_a_valid_signature(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client(ip="127.0.0.1")
    frame = client.frame("other-nonce", auth={})
    assert _denial(client.connect(frame=frame, local=True)) is Denial.DEVICE_SIGNATURE_INVALID


# -- pending requests: expiry, rejection, caps -------------------------------------------------


def test_expired_request_cannot_be_approved_and_reconnect_makes_a_new_one(
    service: PairingService, make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client()
    asked = client.with_gateway_token()
    assert isinstance(asked, Denied) and asked.request is not None
    clock.advance(service.policy.request_ttl + 1)
    with pytest.raises(Exception, match="expired") as raised:
        service.approve(asked.request.id, actor="cli")
    assert type(raised.value).__name__ == "NotFound"
    again = client.with_gateway_token()
    assert isinstance(again, Denied) and again.request is not None
    assert again.request.id != asked.request.id


def test_sweep_expires_requests_with_an_event(
    service: PairingService, make_client: MakeClient, clock: FakeClock
) -> None:
    asked = make_client().with_gateway_token()
    assert isinstance(asked, Denied) and asked.request is not None
    clock.advance(service.policy.request_ttl)
    service.sweep()
    assert service.list_requests() == []
    resolved = [e for e in service.events_after(0) if e.type == "pairing.resolved"]
    assert [(e.data["request_id"], e.data["decision"]) for e in resolved] == [
        (asked.request.id, "expired")
    ]


def test_rejected_request_then_reconnect_makes_a_new_request(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    # Without a cool-down (pairing.decline_cooldown: 0) a declined device may ask again at once.
    service = make_service(PairingPolicy(decline_cooldown=0))
    client = Client(service, clock)
    asked = client.with_gateway_token()
    assert isinstance(asked, Denied) and asked.request is not None
    service.reject(asked.request.id, actor="cli")
    again = client.with_gateway_token()
    assert isinstance(again, Denied) and again.request is not None
    assert again.request.id != asked.request.id


def test_per_client_cap_refuses_further_devices_from_that_address_only(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(max_pending_per_client=3))
    crowd = [Client(service, clock, ip="203.0.113.7") for _ in range(4)]
    outcomes = [client.with_gateway_token() for client in crowd]
    assert all(isinstance(o, Denied) and o.request is not None for o in outcomes[:3])
    capped = outcomes[3]
    assert isinstance(capped, Denied) and capped.denial is Denial.PAIRING_REQUIRED
    assert capped.request is None and "pairing.max_pending_per_client" in capped.detail
    # A known device refreshes its own request whatever the cap ...
    refreshed = crowd[0].with_gateway_token()
    assert isinstance(refreshed, Denied) and refreshed.request is not None
    # ... and another address is not affected.
    elsewhere = Client(service, clock, ip="203.0.113.8").with_gateway_token()
    assert isinstance(elsewhere, Denied) and elsewhere.request is not None


def test_global_cap_refuses_new_requests_until_one_is_resolved(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(max_pending=5, max_pending_per_client=5))
    clients = [Client(service, clock, ip=f"203.0.113.{n}") for n in range(6)]
    outcomes = [client.with_gateway_token() for client in clients]
    capped = outcomes[5]
    assert isinstance(capped, Denied) and capped.request is None
    assert "pairing.max_pending" in capped.detail and "in total" in capped.detail
    first = outcomes[0]
    assert isinstance(first, Denied) and first.request is not None
    service.reject(first.request.id, actor="cli")
    retry = clients[5].with_gateway_token()
    assert isinstance(retry, Denied) and retry.request is not None


def test_expired_requests_do_not_count_towards_the_caps(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(max_pending=1))
    Client(service, clock).with_gateway_token()
    clock.advance(service.policy.request_ttl)
    late = Client(service, clock).with_gateway_token()
    assert isinstance(late, Denied) and late.request is not None


# -- invites ------------------------------------------------------------------------------------


def test_invite_pairs_with_its_role_exactly_once(
    service: PairingService, make_client: MakeClient
) -> None:
    invite, code = service.create_invite(role=Role.ADMIN, name="ops phone", ttl=600, actor="cli")
    first, second = make_client(), make_client()
    admitted = first.connect({"invite": code})
    assert isinstance(admitted, Admitted)
    assert admitted.device.role is Role.ADMIN and admitted.device.name == "ops phone"
    assert service.authenticate_token(admitted.device_token) == admitted.device
    assert _denial(second.connect({"invite": code})) is Denial.INVITE_INVALID
    assert _denial(first.connect({"invite": code})) is Denial.INVITE_INVALID
    used = service.list_invites()[0]
    assert used.id == invite.id and used.used_by_device == first.device_id


def test_expired_or_cancelled_invite_is_invalid(
    service: PairingService, make_client: MakeClient, clock: FakeClock
) -> None:
    _, expiring = service.create_invite(role=Role.USER, name=None, ttl=60, actor="cli")
    cancelled, code = service.create_invite(role=Role.USER, name=None, ttl=60, actor="cli")
    service.cancel_invite(cancelled.id, actor="cli")
    assert _denial(make_client().connect({"invite": code})) is Denial.INVITE_INVALID
    clock.advance(60)
    assert _denial(make_client().connect({"invite": expiring})) is Denial.INVITE_INVALID


def test_two_threads_racing_for_one_invite_exactly_one_wins(
    service: PairingService, make_client: MakeClient
) -> None:
    for _ in range(10):
        _, code = service.create_invite(role=Role.USER, name=None, ttl=600, actor="cli")
        racers = [make_client(ip=f"192.0.2.{n}") for n in range(2)]
        frames = [(r, fresh_nonce()) for r in racers]
        prepared = [(r, n, r.frame(n, auth={"invite": code})) for r, n in frames]
        barrier = threading.Barrier(len(prepared))
        outcomes: list[Admitted | Denied] = []
        threads = [
            threading.Thread(target=_race, args=(barrier, outcomes, *args)) for args in prepared
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [o for o in outcomes if isinstance(o, Admitted)]
        losers = [o for o in outcomes if isinstance(o, Denied)]
        assert len(winners) == 1
        assert [loser.denial for loser in losers] == [Denial.INVITE_INVALID]


def _race(
    barrier: threading.Barrier,
    outcomes: list[Admitted | Denied],
    client: Client,
    nonce: str,
    frame: dict[str, Any],
) -> None:
    barrier.wait()
    outcomes.append(client.connect(frame=frame, nonce=nonce))


# -- brute force -------------------------------------------------------------------------------


def test_brute_force_from_one_address_is_locked_out_while_another_pairs(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    """100,000 guesses of the gateway token: only `failures` per lockout reach the check."""
    limit = RateLimitPolicy(failures=10, window=60, lockout=300)
    service = make_service(PairingPolicy(rate_limit=limit))
    attacker = Client(service, clock, ip="203.0.113.66")
    honest = Client(service, clock, ip="198.51.100.20")
    step, attempts = 0.01, 100_000
    nonce = fresh_nonce()
    frame = attacker.frame(nonce, auth={"token": "guess"})
    signed_at = clock.now
    outcomes: Counter[Denial] = Counter()
    honest_outcome: Admitted | Denied | None = None
    for attempt in range(attempts):
        if clock.now - signed_at > 60:  # the attacker keeps its signatures fresh
            nonce, signed_at = fresh_nonce(), clock.now
            frame = attacker.frame(nonce, auth={"token": "guess"})
        outcome = attacker.connect(frame=frame, nonce=nonce)
        outcomes[_denial(outcome)] += 1
        if attempt == attempts // 2:
            honest_outcome = honest.pair()
        clock.advance(step)
    elapsed = attempts * step
    lockout_periods = math.ceil(elapsed / limit.lockout) + 1
    assert set(outcomes) == {Denial.GATEWAY_TOKEN_MISMATCH, Denial.RATE_LIMITED}
    assert outcomes[Denial.GATEWAY_TOKEN_MISMATCH] <= limit.failures * lockout_periods
    assert outcomes[Denial.RATE_LIMITED] >= attempts - limit.failures * lockout_periods
    assert isinstance(honest_outcome, Admitted)
    assert isinstance(honest.with_device_token(), Admitted)
    assert service.lockout_remaining("198.51.100.20") == 0.0
    lockouts = [e for e in service.events_after(0, 10_000) if e.type == "auth.lockout"]
    assert lockouts and all(e.data["client"] == "203.0.113.66" for e in lockouts)


def test_lockout_ends_after_its_time(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(rate_limit=RateLimitPolicy(3, 60, 300)))
    client = Client(service, clock, ip="203.0.113.9")
    for _ in range(3):
        assert _denial(client.connect({"token": "wrong"})) is Denial.GATEWAY_TOKEN_MISMATCH
    assert _denial(client.with_gateway_token()) is Denial.RATE_LIMITED
    assert service.lockout_remaining("203.0.113.9") == pytest.approx(300)
    clock.advance(300)
    assert _denial(client.with_gateway_token()) is Denial.PAIRING_REQUIRED


def test_failures_spread_beyond_the_window_do_not_lock_out(
    make_service: Callable[..., PairingService], clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(rate_limit=RateLimitPolicy(3, 60, 300)))
    client = Client(service, clock)
    for _ in range(10):
        assert _denial(client.connect({"token": "typo"})) is Denial.GATEWAY_TOKEN_MISMATCH
        clock.advance(31)


def test_lockout_seen_by_one_worker_applies_in_another(
    make_service: Callable[..., PairingService], clock: FakeClock, store: Store
) -> None:
    policy = PairingPolicy(rate_limit=RateLimitPolicy(2, 60, 300))
    worker_a, worker_b = make_service(policy), make_service(policy)
    attacker = Client(worker_a, clock, ip="203.0.113.50")
    attacker.connect({"token": "x"})
    attacker.connect({"token": "y"})
    attacker.service = worker_b
    assert _denial(attacker.with_gateway_token()) is Denial.RATE_LIMITED


# -- malformed frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "detail"),
    [
        (lambda f: f.update(auth="token"), "auth must be an object"),
        (lambda f: f.update(auth={"token": 5}), "auth.token must be a string"),
        (lambda f: f.update(auth={"password": "x"}), "unknown field 'password'"),
        (lambda f: f.update(auth={"token": "a", "deviceToken": "b"}), "only one of"),
        (lambda f: f.update(auth={"token": "x" * 600}), "longer than 512"),
        (lambda f: f.update(role="root"), "role must be"),
        (lambda f: f.update(role=None), "role must be"),
        (lambda f: f.update(client="laptop"), "client must be an object"),
        (lambda f: f.update(client={"name": 7}), "client.name must be a string"),
        (lambda f: f.update(client={"name": "x" * 65}), "1-64 printable"),
        (lambda f: f.update(client={"name": "bell\x07"}), "1-64 printable"),
    ],
)
def test_malformed_frames_are_invalid_handshakes_with_a_reason(
    service: PairingService,
    make_client: MakeClient,
    mutate: Callable[[dict[str, Any]], None],
    detail: str,
) -> None:
    client = make_client()
    nonce = fresh_nonce()
    frame = client.frame(nonce, auth={"token": GATEWAY_TOKEN})
    mutate(frame)
    outcome = client.connect(frame=frame, nonce=nonce)
    assert isinstance(outcome, Denied) and outcome.denial is Denial.INVALID_HANDSHAKE
    assert detail in outcome.detail


def test_empty_credentials_count_as_missing(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client()
    assert _denial(client.connect({"token": ""})) is Denial.GATEWAY_TOKEN_MISSING
    assert _denial(client.connect({"token": None})) is Denial.GATEWAY_TOKEN_MISSING
    assert _denial(client.connect(None)) is Denial.GATEWAY_TOKEN_MISSING


def test_blank_client_name_falls_back_to_a_default(
    service: PairingService, make_client: MakeClient
) -> None:
    client = make_client(name="   ")
    asked = client.with_gateway_token()
    assert isinstance(asked, Denied) and asked.request is not None
    assert asked.request.name == f"device {client.device_id[:8]}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
frames = st.fixed_dictionaries(
    {"type": st.just("connect")},
    optional={
        "auth": json_values
        | st.dictionaries(st.sampled_from(["token", "deviceToken", "invite"]), json_values),
        "device": json_values,
        "client": json_values | st.fixed_dictionaries({"name": json_values}),
        "role": json_values | st.sampled_from(["admin", "user"]),
    },
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=frames, local=st.booleans())
def test_connect_never_raises_on_arbitrary_frames(
    service: PairingService, frame: dict[str, Any], local: bool
) -> None:
    outcome = service.connect(
        attempt=connect_attempt(frame), nonce="n", client_ip="192.0.2.1", local=local, user_agent=None
    )
    assert isinstance(outcome, Denied)
