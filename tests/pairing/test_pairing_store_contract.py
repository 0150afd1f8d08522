"""What every Store backend must do, run against each entry of STORE_FACTORIES."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

from pairing_support import START_TIME

from edge.pairing.codes import new_request_id
from edge.pairing.models import PAIRED, REVOKED, Device, Event, Invite, PairingRequest, Role
from edge.pairing.store import (
    EVENT_LOG_MAX_EVENTS,
    PendingCapHit,
    ResolveStatus,
    Seen,
    Store,
    open_store,
)

NOW = START_TIME
FORK = multiprocessing.get_context("fork")
OpenAgain = Callable[[], Store]


def _request(
    device_number: int = 1,
    *,
    client_ip: str | None = "198.51.100.1",
    role: Role = Role.USER,
    now: float = NOW,
    ttl: float = 300,
    request_id: str | None = None,
) -> PairingRequest:
    return PairingRequest(
        id=request_id or new_request_id(),
        device_id=f"{device_number:064x}",
        public_key=f"key-{device_number}",
        name=f"device {device_number}",
        client_ip=client_ip,
        user_agent="agent",
        role=role,
        reason="not-paired",
        created_at=now,
        expires_at=now + ttl,
    )


def _open(store: Store, request: PairingRequest) -> PairingRequest:
    opened = store.open_request(request, max_pending=1000, max_pending_per_client=1000)
    assert isinstance(opened, PairingRequest)
    return opened


def _device(
    number: int = 1, *, token_hash: str | None = "a" * 64, role: Role = Role.USER
) -> Device:
    return Device(
        id=f"{number:064x}",
        public_key=f"key-{number}",
        name=f"device {number}",
        role=role,
        status=PAIRED,
        token_hash=token_hash,
        created_at=NOW,
        approved_by="cli",
    )


def _approve_at_barrier(
    handle: Store, request_id: str, barrier: threading.Barrier, statuses: list[ResolveStatus]
) -> None:
    barrier.wait()
    result = handle.resolve_request(
        request_id, approve=True, role=None, actor="thread", now=NOW + 1
    )
    statuses.append(result.status)


# -- atomic take --------------------------------------------------------------------------------


def test_concurrent_approvals_from_threads_exactly_one_succeeds(
    store: Store, open_store_again: OpenAgain
) -> None:
    handles = [store, open_store_again()]
    for round_number in range(10):
        request = _open(store, _request(round_number))
        barrier = threading.Barrier(6)
        statuses: list[ResolveStatus] = []
        threads = [
            threading.Thread(
                target=_approve_at_barrier, args=(handles[n % 2], request.id, barrier, statuses)
            )
            for n in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(s.value for s in statuses) == ["already_resolved"] * 5 + ["resolved"]
    approvals = [e for e in store.events_after(0, 1000) if e.data.get("decision") == "approved"]
    assert len(approvals) == 10


def _approve_when_released(
    url: str, data_dir: Path, request_id: str, start: object, results: object
) -> None:
    store = open_store(url, data_dir)
    start.wait(30)  # type: ignore[attr-defined]
    result = store.resolve_request(
        request_id, approve=True, role=None, actor=f"pid {os.getpid()}", now=NOW + 1
    )
    results.put(result.status.value)  # type: ignore[attr-defined]
    store.close()


def test_concurrent_approvals_from_processes_exactly_one_succeeds(
    store: Store, store_url: str, data_dir: Path
) -> None:
    for round_number in range(4):
        request = _open(store, _request(round_number))
        start, results = FORK.Event(), FORK.Queue()
        processes = [
            FORK.Process(
                target=_approve_when_released,
                args=(store_url, data_dir, request.id, start, results),
            )
            for _ in range(3)
        ]
        for process in processes:
            process.start()
        start.set()
        outcomes = sorted(results.get(timeout=60) for _ in processes)
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
        assert outcomes == ["already_resolved", "already_resolved", "resolved"]
    assert len(store.list_devices()) == 4


# -- events travel with their changes ----------------------------------------------------------------


def test_events_are_written_with_their_change_and_read_elsewhere(
    store: Store, open_store_again: OpenAgain
) -> None:
    elsewhere = open_store_again()
    start = elsewhere.latest_seq()
    request = _open(store, _request())
    result = store.resolve_request(request.id, approve=True, role=Role.ADMIN, actor="cli", now=NOW)
    assert result.status is ResolveStatus.RESOLVED
    events = elsewhere.events_after(start)
    assert [e.type for e in events] == ["pairing.requested", "pairing.resolved"]
    resolved = events[1]
    assert resolved.data["decision"] == "approved" and resolved.data["granted_role"] == "admin"
    assert resolved.data["request_id"] == request.id and resolved.at == NOW
    device = elsewhere.get_device(request.device_id)
    assert device is not None and device.role is Role.ADMIN and device.approved_by == "cli"
    assert elsewhere.latest_seq() == events[-1].seq > start


def test_event_seq_increases_and_reads_are_paged(store: Store) -> None:
    for number in range(7):
        _open(store, _request(number))
    events = store.events_after(0, limit=3)
    assert len(events) == 3
    rest = store.events_after(events[-1].seq, limit=100)
    seqs = [e.seq for e in events + rest]
    assert len(seqs) == 7 and seqs == sorted(set(seqs))
    assert store.events_after(seqs[-1]) == []


def test_wait_events_returns_empty_after_its_timeout(store: Store) -> None:
    assert store.wait_events(store.latest_seq(), timeout=0.05) == []


def test_wait_events_wakes_for_a_change_made_elsewhere(
    store: Store, open_store_again: OpenAgain
) -> None:
    writer = open_store_again()
    seen = store.latest_seq()
    received: list[list[Event]] = []
    waiter = threading.Thread(target=lambda: received.append(store.wait_events(seen, 30)))
    waiter.start()
    writer.pair_device(_device(), actor="cli", now=NOW)
    waiter.join(60)
    assert len(received) == 1 and len(received[0]) == 1


def test_housekeeping_bounds_the_event_log_but_not_the_sequence(store: Store) -> None:
    store.pair_device(_device(1), actor="cli", now=NOW - 2 * 86_400)  # an old event
    for n in range(EVENT_LOG_MAX_EVENTS + 5):  # each failure starts (and ends) a lockout
        at = NOW + n * 0.01
        store.record_failure("203.0.113.1", now=at, window=60, threshold=1, lockout=0.001)
    latest = store.latest_seq()
    store.housekeeping(NOW + 200)
    kept = store.events_after(0, limit=EVENT_LOG_MAX_EVENTS + 100)
    assert len(kept) == EVENT_LOG_MAX_EVENTS
    assert kept[-1].seq == latest and all(e.type == "auth.lockout" for e in kept)
    assert store.latest_seq() == latest
    store.pair_device(_device(2, token_hash="b" * 64), actor="cli", now=NOW)
    assert store.latest_seq() == latest + 1


# -- durability ------------------------------------------------------------------------------------


def _approve_then_hang(url: str, data_dir: Path, request_id: str, report: Connection) -> None:
    store = open_store(url, data_dir)
    result = store.resolve_request(request_id, approve=True, role=None, actor="child", now=NOW)
    report.send(result.status.value)
    time.sleep(120)


def test_acknowledged_approval_survives_kill_9(
    store: Store, store_url: str, data_dir: Path
) -> None:
    request = _open(store, _request())
    store.close()
    parent_end, child_end = FORK.Pipe()
    child = FORK.Process(
        target=_approve_then_hang, args=(store_url, data_dir, request.id, child_end)
    )
    child.start()
    try:
        assert parent_end.poll(60), "the child never acknowledged the approval"
        assert parent_end.recv() == "resolved"
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    reopened = open_store(store_url, data_dir)
    try:
        device = reopened.get_device(request.device_id)
        assert device is not None and device.status == PAIRED and device.approved_by == "child"
        assert reopened.get_request(request.id) is None
    finally:
        reopened.close()


# -- pending requests ---------------------------------------------------------------------------------


def test_one_pending_request_per_device_refreshed_in_place(store: Store) -> None:
    first = _open(store, _request(1, client_ip="198.51.100.1"))
    later = _request(1, client_ip="198.51.100.2", role=Role.ADMIN, now=NOW + 100)
    refreshed = _open(store, later)
    assert refreshed.id == first.id and refreshed.created_at == first.created_at
    assert refreshed.client_ip == "198.51.100.2" and refreshed.role is Role.ADMIN
    assert refreshed.expires_at == NOW + 400
    assert store.list_requests(NOW + 100) == [refreshed]
    assert store.get_request(first.id) == refreshed
    types = [e.type for e in store.events_after(0)]
    assert types == ["pairing.requested", "pairing.requested"]  # the role changed
    _open(store, replace(later, created_at=NOW + 200, expires_at=NOW + 500))
    assert len(store.events_after(0)) == 2  # nothing material changed: no event


def test_caps_count_unexpired_pending_requests(store: Store) -> None:
    def open_for(number: int, ip: str | None, now: float = NOW) -> PairingRequest | PendingCapHit:
        return store.open_request(
            _request(number, client_ip=ip, now=now), max_pending=4, max_pending_per_client=2
        )

    assert isinstance(open_for(1, "192.0.2.1"), PairingRequest)
    assert isinstance(open_for(2, "192.0.2.1"), PairingRequest)
    assert open_for(3, "192.0.2.1") == PendingCapHit("max_pending_per_client", 2)
    assert isinstance(open_for(4, None), PairingRequest)
    assert isinstance(open_for(5, None), PairingRequest)
    assert open_for(6, None) == PendingCapHit("max_pending_per_client", 2)
    assert open_for(7, "192.0.2.9") == PendingCapHit("max_pending", 4)
    assert isinstance(open_for(7, "192.0.2.9", now=NOW + 300), PairingRequest)


def test_request_id_in_use_is_replaced(store: Store) -> None:
    first = _open(store, _request(1, request_id="AAAA-BBBB"))
    second = _open(store, _request(2, request_id="AAAA-BBBB"))
    assert first.id == "AAAA-BBBB" and second.id != "AAAA-BBBB"


def test_resolution_outcomes(store: Store) -> None:
    assert (
        store.resolve_request("ZZZZ-ZZZZ", approve=True, role=None, actor="cli", now=NOW).status
        is ResolveStatus.NOT_FOUND
    )
    stale = _open(store, _request(1, ttl=10))
    expired = store.resolve_request(stale.id, approve=True, role=None, actor="cli", now=NOW + 10)
    assert expired.status is ResolveStatus.EXPIRED and expired.request == stale
    assert store.get_device(stale.device_id) is None
    again = store.resolve_request(stale.id, approve=False, role=None, actor="cli", now=NOW + 11)
    assert (again.status, again.decision) == (ResolveStatus.ALREADY_RESOLVED, "expired")
    rejected = _open(store, _request(2))
    first = store.resolve_request(rejected.id, approve=False, role=None, actor="ops", now=NOW)
    assert first.status is ResolveStatus.RESOLVED and first.device is None
    second = store.resolve_request(rejected.id, approve=True, role=None, actor="cli", now=NOW)
    assert (second.status, second.decision, second.resolved_by) == (
        ResolveStatus.ALREADY_RESOLVED,
        "rejected",
        "ops",
    )


def test_expire_requests_settles_only_the_expired(store: Store) -> None:
    old = _open(store, _request(1, ttl=10))
    young = _open(store, _request(2, ttl=100))
    assert store.expire_requests(NOW + 10) == [old]
    assert store.expire_requests(NOW + 10) == []
    assert store.list_requests(NOW + 10) == [young]
    assert store.counts(NOW + 10) == (1, {"admin": 0, "user": 0})


def test_pairing_a_device_settles_its_pending_request(store: Store) -> None:
    request = _open(store, _request(1))
    store.pair_device(_device(1, role=Role.ADMIN), actor="local", now=NOW)
    assert store.list_requests(NOW) == []
    resolved = store.events_after(0)[-1]
    assert resolved.type == "pairing.resolved" and resolved.data["decision"] == "approved"
    assert resolved.data["request_id"] == request.id and resolved.data["actor"] == "local"


# -- devices ----------------------------------------------------------------------------------------


def test_token_replacement_is_compare_and_set(store: Store) -> None:
    store.pair_device(_device(1, token_hash=None), actor="cli", now=NOW)
    device_id = _device(1).id
    first = store.replace_token(
        device_id, expected_hash=None, new_hash="b" * 64, actor="a", reason="issued", now=NOW
    )
    assert first is not None and first.token_hash == "b" * 64
    stale = store.replace_token(
        device_id, expected_hash=None, new_hash="c" * 64, actor="b", reason="issued", now=NOW
    )
    assert stale is None
    assert store.device_for_token("b" * 64) == first
    assert store.device_for_token("c" * 64) is None


def test_revoked_device_keeps_its_token_hash_and_takes_no_new_token(store: Store) -> None:
    store.pair_device(_device(1), actor="cli", now=NOW)
    revoked = store.revoke_device(_device(1).id, actor="cli", now=NOW + 5)
    assert revoked is not None and (revoked.status, revoked.revoked_at) == (REVOKED, NOW + 5)
    assert store.device_for_token("a" * 64) == revoked
    assert store.revoke_device(_device(1).id, actor="cli", now=NOW + 6) is None
    assert (
        store.replace_token(
            revoked.id, expected_hash="a" * 64, new_hash="d" * 64, actor="x", reason="r", now=NOW
        )
        is None
    )
    assert store.list_devices() == [] and store.list_devices(include_revoked=True) == [revoked]


def test_rename_and_missing_devices(store: Store) -> None:
    assert store.rename_device("0" * 64, "x", actor="cli", now=NOW) is None
    store.pair_device(_device(1), actor="cli", now=NOW)
    renamed = store.rename_device(_device(1).id, "new", actor="cli", now=NOW)
    assert renamed is not None and renamed.name == "new"
    assert store.get_device(_device(1).id) == renamed


def test_users_are_assigned_at_approval_kept_and_changed_with_events(
    store: Store, open_store_again: OpenAgain
) -> None:
    request = _open(store, _request(1))
    approved = store.resolve_request(
        request.id, approve=True, role=None, actor="cli", now=NOW, user="alice"
    )
    assert approved.device is not None and approved.device.user == "alice"
    other = open_store_again()  # what another process reads
    assert other.get_device(_device(1).id) == approved.device
    # A later approval of the still-paired device (a role upgrade) keeps the user.
    upgrade = _open(store, _request(1, role=Role.ADMIN))
    upgraded = store.resolve_request(upgrade.id, approve=True, role=None, actor="cli", now=NOW)
    assert upgraded.device is not None
    assert (upgraded.device.user, upgraded.device.role) == ("alice", Role.ADMIN)
    # Several devices may share one user.
    second = _open(store, _request(2))
    store.resolve_request(second.id, approve=True, role=None, actor="cli", now=NOW, user="alice")
    assert {d.user for d in store.list_devices()} == {"alice"}
    reassigned = store.assign_user(_device(1).id, "bob", actor="ops", now=NOW + 1)
    assert reassigned is not None and reassigned.user == "bob"
    assert other.get_device(_device(1).id) == reassigned
    event = store.events_after(0)[-1]
    assert event.type == "device.user_assigned"
    assert (event.data["user"], event.data["previous_user"], event.data["actor"]) == (
        "bob",
        "alice",
        "ops",
    )
    cleared = store.assign_user(_device(1).id, None, actor="ops", now=NOW + 2)
    assert cleared is not None and cleared.user is None
    assert store.get_device(_device(1).id) == cleared
    assert store.assign_user("0" * 64, "carol", actor="ops", now=NOW) is None


def test_a_device_paired_without_a_user_has_none(store: Store) -> None:
    store.pair_device(_device(1), actor="cli", now=NOW)
    device = store.get_device(_device(1).id)
    assert device is not None and device.user is None


def test_last_seen_never_moves_backwards(store: Store) -> None:
    store.pair_device(_device(1), actor="cli", now=NOW)
    device_id = _device(1).id
    store.record_seen({device_id: Seen(NOW + 50, "192.0.2.5"), "f" * 64: Seen(NOW, None)})
    store.record_seen({device_id: Seen(NOW + 10, None)})
    device = store.get_device(device_id)
    assert device is not None and (device.last_seen_at, device.last_ip) == (NOW + 50, "192.0.2.5")


def test_idle_devices_are_removed_with_events(store: Store) -> None:
    store.pair_device(_device(1), actor="cli", now=NOW)
    store.pair_device(_device(2, token_hash="e" * 64), actor="cli", now=NOW)
    store.record_seen({_device(2).id: Seen(NOW + 100, None)})
    assert [d.id for d in store.expire_idle_devices(NOW + 50, now=NOW + 200)] == [_device(1).id]
    assert [d.id for d in store.list_devices()] == [_device(2).id]
    assert store.events_after(0)[-1].type == "device.expired"


# -- invites ----------------------------------------------------------------------------------------


def _invite(code_hash: str = "c" * 64, *, ttl: float = 60) -> Invite:
    return Invite(new_request_id(), code_hash, Role.ADMIN, "ops", NOW, NOW + ttl, "cli")


def test_invite_is_redeemed_once(store: Store) -> None:
    invite = _invite()
    store.add_invite(invite)
    device = store.redeem_invite(
        "c" * 64, device_id="1" * 64, public_key="k", name="client", token_hash="t" * 64, now=NOW
    )
    assert device is not None and device.role is Role.ADMIN and device.name == "ops"
    assert device.token_hash == "t" * 64 and store.device_for_token("t" * 64) == device
    again = store.redeem_invite(
        "c" * 64, device_id="2" * 64, public_key="k", name="x", token_hash="u" * 64, now=NOW
    )
    assert again is None and store.get_device("2" * 64) is None
    (used,) = store.list_invites()
    assert used.used_by_device == "1" * 64 and used.used_at == NOW
    assert store.cancel_invite(used.id, actor="cli", now=NOW) is None


def test_expired_invite_cannot_be_redeemed(store: Store) -> None:
    store.add_invite(_invite(ttl=60))
    assert (
        store.redeem_invite(
            "c" * 64,
            device_id="1" * 64,
            public_key="k",
            name="x",
            token_hash="t" * 64,
            now=NOW + 60,
        )
        is None
    )


# -- failed attempts ----------------------------------------------------------------------------------


def test_failures_within_the_window_start_one_lockout(store: Store) -> None:
    def fail(at: float) -> float | None:
        return store.record_failure("192.0.2.7", now=at, window=60, threshold=3, lockout=300)

    assert fail(NOW) is None and fail(NOW + 1) is None
    assert fail(NOW + 2) == NOW + 302
    assert store.locked_until("192.0.2.7") == NOW + 302
    assert fail(NOW + 3) is None and fail(NOW + 4) is None and fail(NOW + 5) is None
    assert store.locked_until("192.0.2.7") == NOW + 302  # never extended
    assert store.locked_until("192.0.2.8") == 0.0
    lockouts = [e for e in store.events_after(0) if e.type == "auth.lockout"]
    assert len(lockouts) == 1
    assert lockouts[0].data == {
        "client": "192.0.2.7",
        "failures": 3,
        "until": NOW + 302,
        "lockout": 300,
    }


def test_failures_in_a_new_window_start_counting_again(store: Store) -> None:
    for offset in (0, 1, 61, 62):
        assert (
            store.record_failure("192.0.2.7", now=NOW + offset, window=60, threshold=3, lockout=9)
            is None
        )


def test_counts(store: Store) -> None:
    store.pair_device(_device(1, role=Role.ADMIN), actor="cli", now=NOW)
    store.pair_device(_device(2, token_hash="f" * 64), actor="cli", now=NOW)
    store.revoke_device(_device(2).id, actor="cli", now=NOW)
    _open(store, _request(3))
    assert store.counts(NOW) == (1, {"admin": 1, "user": 0})


def test_store_describes_itself_without_secrets(store: Store) -> None:
    assert isinstance(store, Store)
    assert "://" in store.description


# -- replacing an older twin, expiring idle local devices ----------------------------------------


def test_an_approval_can_revoke_the_older_twin_in_the_same_write(store: Store) -> None:
    twin = replace(_device(7, token_hash="c" * 64), user="alice", name="device 1")
    store.pair_device(twin, actor="cli", now=NOW)
    start = store.latest_seq()
    request = _open(store, _request(1))
    result = store.resolve_request(
        request.id, approve=True, role=None, actor="ops", now=NOW + 5, replaces=twin.id
    )
    assert result.status is ResolveStatus.RESOLVED
    assert result.device is not None and result.device.id == request.device_id
    assert result.device.user == "alice"  # the same person's device: upstream apps keep the user
    assert result.replaced is not None and result.replaced.id == twin.id
    old = store.get_device(twin.id)
    assert old is not None and old.status == REVOKED and old.revoked_at == NOW + 5
    assert store.device_for_token("c" * 64) is not None  # kept to answer "device revoked"
    events = store.events_after(start)
    revoked = [e for e in events if e.type == "device.revoked"]
    assert [(e.data["device_id"], e.data["replaced_by"], e.data["actor"]) for e in revoked] == [
        (twin.id, request.device_id, "ops")
    ]
    assert {d.id for d in store.list_devices()} == {request.device_id}


def test_a_twin_already_gone_or_the_device_itself_is_not_replaced(store: Store) -> None:
    gone = _device(8, token_hash="d" * 64)
    store.pair_device(gone, actor="cli", now=NOW)
    store.revoke_device(gone.id, actor="cli", now=NOW)
    first = _open(store, _request(1))
    result = store.resolve_request(
        first.id, approve=True, role=None, actor="ops", now=NOW, replaces=gone.id
    )
    assert result.status is ResolveStatus.RESOLVED and result.replaced is None
    again = _open(store, _request(1, role=Role.ADMIN))
    itself = store.resolve_request(
        again.id, approve=True, role=None, actor="ops", now=NOW, replaces=first.device_id
    )
    assert itself.replaced is None
    device = store.get_device(first.device_id)
    assert device is not None and device.is_paired


def test_idle_expiry_can_be_limited_to_devices_one_actor_approved(store: Store) -> None:
    local = replace(_device(1, token_hash="e" * 64), approved_by="local")
    store.pair_device(local, actor="local", now=NOW)
    store.pair_device(_device(2, token_hash="f" * 64), actor="cli", now=NOW)
    expired = store.expire_idle_devices(NOW + 10, now=NOW + 10, approved_by="local")
    assert [d.id for d in expired] == [_device(1).id]
    assert [d.id for d in store.list_devices()] == [_device(2).id]
    assert store.expire_idle_devices(NOW + 10, now=NOW + 10, approved_by="local") == []
