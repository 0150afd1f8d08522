"""Every pairing decision of the store, written once, as a step over a backend's ``Tx``.

``Ledger`` is the ``Store`` the rest of Edge uses. Each mutator reads what it
needs through the ``Tx``, decides with the domain functions of ``models``
(``approval_role``, ``approved_device``, ``Invite.usable``,
``PairingRequest.expired``) and writes the records and events of the change
through the same ``Tx``, which the backend applies as one atomic step: SQLite
holds its write lock for the whole step, Redis commits it only if nothing it
read changed meanwhile (and otherwise runs the step again). So two approvals
of one request give exactly one RESOLVED on both backends, from the same code.

How long a record is worth keeping (``keep_until``) is decided here too; each
backend drops what is released in its own way (a SQL sweep, Redis TTLs).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace

from edge.pairing.codes import new_request_id
from edge.pairing.models import (
    REVOKED,
    Device,
    Event,
    Invite,
    PairingRequest,
    Role,
    approval_role,
    approved_device,
    device_event_data,
    invite_event_data,
    request_event_data,
    said_no,
)
from edge.pairing.store.base import (
    MAX_EVENTS_PER_READ,
    PENDING,
    RESOLVED_RETENTION,
    Backend,
    BackendInfo,
    FailureCount,
    Seen,
    StoredRequest,
    StoreError,
    StoreSnapshot,
    Tx,
)
from edge.pairing.store.outcomes import (
    Counted,
    Declined,
    PendingCapHit,
    ResolveOutcome,
    ResolveStatus,
)

FAILURE_GRACE = 60.0  # a failure counter outlives its window or lockout by this much
SWEEP = "sweep"


class Ledger:
    """``Store`` over any ``Backend``; safe for every thread and process the backend allows."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def description(self) -> str:
        return self.backend.description

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"

    # -- devices ------------------------------------------------------------------------------

    def get_device(self, device_id: str) -> Device | None:
        return self.backend.read("read a device", lambda r: r.device(device_id))

    def device_for_token(self, token_hash: str) -> Device | None:
        return self.backend.read("read a device", lambda r: r.device_for_token(token_hash))

    def list_devices(self, *, include_revoked: bool = False) -> list[Device]:
        return self.backend.read(
            "list devices", lambda r: r.list_devices(include_revoked=include_revoked)
        )

    def pair_device(self, device: Device, *, actor: str, now: float) -> None:
        def step(tx: Tx) -> None:
            existing = tx.device(device.id)
            tx.put_device(device)
            tx.append(
                "device.paired",
                device_event_data(
                    device,
                    actor,
                    previous_status=existing.status if existing else None,
                    previous_role=existing.role.value if existing else None,
                ),
                now,
            )
            _settle_pending_of(tx, device.id, "approved", actor, now)

        self.backend.transact("pair a device", now, step)

    def replace_token(
        self,
        device_id: str,
        *,
        expected_hash: str | None,
        new_hash: str,
        actor: str,
        reason: str,
        now: float,
    ) -> Device | None:
        def step(tx: Tx) -> Device | None:
            device = tx.device(device_id)
            if device is None or not device.is_paired or device.token_hash != expected_hash:
                return None
            updated = replace(device, token_hash=new_hash)
            tx.put_device(updated)
            tx.append("device.token_rotated", device_event_data(device, actor, reason=reason), now)
            return updated

        return self.backend.transact("replace a device token", now, step)

    def revoke_device(self, device_id: str, *, actor: str, now: float) -> Device | None:
        def step(tx: Tx) -> Device | None:
            device = tx.device(device_id)
            if device is None or device.status == REVOKED:
                return None
            return _revoke(tx, device, actor, now)

        return self.backend.transact("revoke a device", now, step)

    def assign_user(
        self, device_id: str, user: str | None, *, actor: str, now: float
    ) -> Device | None:
        def step(tx: Tx) -> Device | None:
            device = tx.device(device_id)
            if device is None:
                return None
            assigned = replace(device, user=user)
            tx.put_device(assigned)
            tx.append(
                "device.user_assigned",
                device_event_data(assigned, actor, previous_user=device.user),
                now,
            )
            return assigned

        return self.backend.transact("assign a user", now, step)

    def rename_device(self, device_id: str, name: str, *, actor: str, now: float) -> Device | None:
        def step(tx: Tx) -> Device | None:
            device = tx.device(device_id)
            if device is None:
                return None
            renamed = replace(device, name=name)
            tx.put_device(renamed)
            tx.append(
                "device.renamed", device_event_data(renamed, actor, previous_name=device.name), now
            )
            return renamed

        return self.backend.transact("rename a device", now, step)

    def record_seen(self, seen: Mapping[str, Seen]) -> None:
        if not seen:
            return

        def step(tx: Tx) -> None:
            for device_id, device in tx.devices(list(seen)).items():
                item = seen[device_id]
                updated = replace(
                    device,
                    last_seen_at=max(device.last_seen_at or 0.0, item.at),
                    last_ip=item.ip if item.ip is not None else device.last_ip,
                )
                if updated != device:
                    tx.put_device(updated)

        self.backend.transact("record last-seen times", time.time(), step)

    def expire_idle_devices(
        self, idle_before: float, *, now: float, approved_by: str | None = None
    ) -> list[Device]:
        # A read first: the sweep runs every few seconds and must not take the write
        # lock (SQLite) when, as nearly always, nothing is idle.
        action = "expire idle devices"

        def chosen(devices: list[Device]) -> list[Device]:
            if approved_by is None:
                return devices
            return [device for device in devices if device.approved_by == approved_by]

        if not chosen(self.backend.read(action, lambda r: r.inactive_devices(idle_before))):
            return []

        def step(tx: Tx) -> list[Device]:
            idle = chosen(tx.inactive_devices(idle_before))
            for device in idle:
                tx.delete_device(device)
                tx.append(
                    "device.expired",
                    device_event_data(device, SWEEP, last_seen_at=device.last_seen_at),
                    now,
                )
            return idle

        return self.backend.transact(action, now, step)

    # -- pairing requests ---------------------------------------------------------------------

    def open_request(
        self,
        candidate: PairingRequest,
        *,
        max_pending: int,
        max_pending_per_client: int,
        renew_expiry: bool = True,
        decline_cooldown: float = 0.0,
    ) -> PairingRequest | PendingCapHit | Declined:
        now = candidate.created_at

        def step(tx: Tx) -> PairingRequest | PendingCapHit | Declined:
            existing = tx.pending_of(candidate.device_id)
            if existing is not None:
                if not existing.expired(now):
                    return _refresh(tx, existing, candidate, renew_expiry=renew_expiry)
                _settle(tx, existing, "expired", SWEEP, now)
            last = tx.last_settled_of(candidate.device_id) if decline_cooldown > 0 else None
            if last is not None and said_no(
                last.status, last.request, last.resolved_at, candidate, now, decline_cooldown
            ):
                at = last.resolved_at or now
                return Declined(last.request, at, last.resolved_by, at + decline_cooldown)
            if not tx.client_pending_below(candidate.client_key, max_pending_per_client, now):
                return PendingCapHit("max_pending_per_client", max_pending_per_client)
            if not tx.pending_below(max_pending, now):
                return PendingCapHit("max_pending", max_pending)
            request_id = candidate.id
            while tx.request(request_id) is not None:
                request_id = new_request_id()
            request = replace(candidate, id=request_id)
            tx.put_request(
                StoredRequest(request, PENDING), keep_until=pending_keep_until(request, now)
            )
            tx.append(
                "pairing.requested", request_event_data(request, expires_at=request.expires_at), now
            )
            return request

        return self.backend.transact("open a pairing request", now, step)

    def get_request(self, request_id: str) -> PairingRequest | None:
        stored = self.backend.read("read a pairing request", lambda r: r.request(request_id))
        return stored.request if stored is not None and stored.status == PENDING else None

    def list_requests(self, now: float) -> list[PairingRequest]:
        return self.backend.read("list pairing requests", lambda r: r.pending_requests(now))

    def resolve_request(
        self,
        request_id: str,
        *,
        approve: bool,
        role: Role | None,
        actor: str,
        now: float,
        user: str | None = None,
        replaces: str | None = None,
        at_most: Role | None = None,
    ) -> ResolveOutcome:
        def step(tx: Tx) -> ResolveOutcome:
            stored = tx.request(request_id)
            if stored is None:
                return ResolveOutcome(ResolveStatus.NOT_FOUND)
            request = stored.request
            if stored.status != PENDING:
                return ResolveOutcome(
                    ResolveStatus.ALREADY_RESOLVED,
                    request,
                    decision=stored.status,
                    resolved_by=stored.resolved_by,
                )
            if request.expired(now):
                _settle(tx, request, "expired", SWEEP, now)
                return ResolveOutcome(
                    ResolveStatus.EXPIRED, request, decision="expired", resolved_by=SWEEP
                )
            if not approve:
                _settle(tx, request, "rejected", actor, now)
                return ResolveOutcome(
                    ResolveStatus.RESOLVED, request, decision="rejected", resolved_by=actor
                )
            existing = tx.device(request.device_id)
            twin = tx.device(replaces) if replaces is not None else None
            if twin is not None and (not twin.is_paired or twin.id == request.device_id):
                twin = None
            granted = approval_role(existing, request.role, role, at_most)
            device = approved_device(
                existing,
                device_id=request.device_id,
                public_key=request.public_key,
                name=request.name,
                role=granted,
                approved_by=actor,
                now=now,
                # the replacement is the same person's: upstream apps keep knowing it as them
                user=user if user is not None or twin is None else twin.user,
            )
            tx.put_device(device)
            _settle(tx, request, "approved", actor, now, granted_role=granted.value)
            replaced = None
            if twin is not None:
                replaced = _revoke(tx, twin, actor, now, replaced_by=device.id)
            return ResolveOutcome(
                ResolveStatus.RESOLVED,
                request,
                device,
                decision="approved",
                resolved_by=actor,
                replaced=replaced,
            )

        return self.backend.transact("resolve a pairing request", now, step)

    def expire_requests(self, now: float) -> list[PairingRequest]:
        if not self.backend.read(
            "find expired pairing requests", lambda r: r.expired_requests(now)
        ):
            return []

        def step(tx: Tx) -> list[PairingRequest]:
            expired = tx.expired_requests(now)
            for request in expired:
                _settle(tx, request, "expired", SWEEP, now)
            return expired

        return self.backend.transact("expire pairing requests", now, step)

    # -- invites ------------------------------------------------------------------------------

    def add_invite(self, invite: Invite) -> None:
        def step(tx: Tx) -> None:
            if tx.invite(invite.id) is not None or tx.invite_by_code(invite.code_hash) is not None:
                raise StoreError(
                    f"{self.backend.name}: invite {invite.id} or its code already exists; "
                    "nothing was changed"
                )
            tx.put_invite(
                invite, keep_until=max(invite.expires_at, invite.created_at) + RESOLVED_RETENTION
            )
            tx.append(
                "invite.created", invite_event_data(invite, invite.created_by), invite.created_at
            )

        self.backend.transact("create an invite", invite.created_at, step)

    def list_invites(self) -> list[Invite]:
        return self.backend.read("list invites", lambda r: r.list_invites())

    def cancel_invite(self, invite_id: str, *, actor: str, now: float) -> Invite | None:
        def step(tx: Tx) -> Invite | None:
            invite = tx.invite(invite_id)
            if invite is None or invite.used_at is not None:
                return None
            tx.delete_invite(invite)
            tx.append("invite.cancelled", invite_event_data(invite, actor), now)
            return invite

        return self.backend.transact("cancel an invite", now, step)

    def redeem_invite(
        self,
        code_hash: str,
        *,
        device_id: str,
        public_key: str,
        name: str,
        token_hash: str,
        now: float,
    ) -> Device | None:
        def step(tx: Tx) -> Device | None:
            invite = tx.invite_by_code(code_hash)
            if invite is None or not invite.usable(now):
                return None
            used = replace(invite, used_at=now, used_by_device=device_id)
            tx.put_invite(used, keep_until=now + RESOLVED_RETENTION)
            existing = tx.device(device_id)
            actor = f"{invite.created_by} (invite {invite.id})"
            device = approved_device(
                existing,
                device_id=device_id,
                public_key=public_key,
                name=invite.name or name,
                role=approval_role(existing, invite.role, None),
                approved_by=actor,
                now=now,
                token_hash=token_hash,
            )
            tx.put_device(device)
            tx.append(
                "invite.used",
                invite_event_data(
                    invite,
                    actor,
                    device_id=device.id,
                    device_name=device.name,
                    granted_role=device.role.value,
                ),
                now,
            )
            _settle_pending_of(tx, device_id, "approved", actor, now)
            return device

        return self.backend.transact("redeem an invite", now, step)

    # -- failed attempts ----------------------------------------------------------------------

    def record_failure(
        self, client: str, *, now: float, window: float, threshold: int, lockout: float
    ) -> float | None:
        counted = self.count_failure(
            client, now=now, window=window, threshold=threshold, lockout=lockout
        )
        return counted.started

    def count_failure(
        self, client: str, *, now: float, window: float, threshold: int, lockout: float
    ) -> Counted:
        def step(tx: Tx) -> Counted:
            row = tx.failure(client)
            locked_until = row.locked_until if row else 0.0
            if row is None or now - row.window_start >= window:
                window_start, count = now, 1
            else:
                window_start, count = row.window_start, row.count + 1
            started: float | None = None
            if locked_until <= now and count >= threshold:
                started = locked_until = now + lockout
                tx.append(
                    "auth.lockout",
                    {"client": client, "failures": count, "until": started, "lockout": lockout},
                    now,
                )
                window_start, count = now, 0
            keep_until = max(window_start + window, locked_until) + FAILURE_GRACE
            tx.put_failure(
                FailureCount(client, window_start, count, locked_until), keep_until=keep_until
            )
            return Counted(count, locked_until, started)

        return self.backend.transact("count a failed attempt", now, step)

    def locked_until(self, client: str) -> float:
        row = self.backend.read("read a lockout", lambda r: r.failure(client))
        return row.locked_until if row is not None else 0.0

    def failure_of(self, client: str) -> FailureCount | None:
        return self.backend.read("read a failure counter", lambda r: r.failure(client))

    def lockouts(self, now: float) -> list[FailureCount]:
        rows = self.backend.read("list lockouts", lambda r: r.failures())
        return sorted((r for r in rows if r.locked_until > now), key=lambda r: r.locked_until)

    def unlock(self, client: str, *, actor: str, now: float) -> FailureCount | None:
        """Lifting a lockout also forgets the failures that led to it: a fresh start."""

        def step(tx: Tx) -> FailureCount | None:
            row = tx.failure(client)
            if row is None or row.locked_until <= now:
                return None
            tx.put_failure(FailureCount(client, now, 0, 0.0), keep_until=now + FAILURE_GRACE)
            tx.append(
                "auth.unlocked",
                {"client": client, "actor": actor, "was_locked_until": row.locked_until},
                now,
            )
            return row

        return self.backend.transact("lift a lockout", now, step)

    # -- events -------------------------------------------------------------------------------

    def latest_seq(self) -> int:
        return self.backend.read("read the event log", lambda r: r.latest_seq())

    def events_after(self, seq: int, limit: int = 500) -> list[Event]:
        limit = max(1, min(int(limit), MAX_EVENTS_PER_READ))
        return self.backend.read("read the event log", lambda r: r.events_after(int(seq), limit))

    def wait_events(self, after: int, timeout: float) -> list[Event]:
        return self.backend.wait_events(after, timeout)

    def claim(self, purpose: str, seqs: Iterable[int]) -> set[int]:
        return self.backend.claim(purpose, seqs)

    # -- upkeep -------------------------------------------------------------------------------

    def counts(self, now: float) -> tuple[int, dict[str, int]]:
        return self.backend.read("count devices and requests", lambda r: r.counts(now))

    def housekeeping(self, now: float) -> None:
        self.backend.housekeeping(now)

    def file_problem(self, *, deep: bool) -> str | None:
        return self.backend.file_problem(deep=deep)

    def export_snapshot(self) -> StoreSnapshot:
        return self.backend.export_snapshot()

    def import_snapshot(self, snapshot: StoreSnapshot, *, replace: bool = False) -> None:
        self.backend.import_snapshot(snapshot, replace=replace)

    def about(self) -> BackendInfo:
        return self.backend.about()

    def close(self) -> None:
        self.backend.close()


# -- shared steps ---------------------------------------------------------------------------------


def pending_keep_until(request: PairingRequest, now: float) -> float:
    """A pending request is kept a day past its expiry (to answer "it expired")."""
    return max(request.expires_at, now) + RESOLVED_RETENTION


def _settle(
    tx: Tx, request: PairingRequest, decision: str, actor: str, now: float, **extra: object
) -> None:
    tx.put_request(
        StoredRequest(request, decision, now, actor), keep_until=now + RESOLVED_RETENTION
    )
    tx.append(
        "pairing.resolved",
        request_event_data(request, decision=decision, actor=actor, **extra),
        now,
    )


def _revoke(tx: Tx, device: Device, actor: str, now: float, **extra: object) -> Device:
    """Revoke ``device`` (paired): its token dies, its sockets close on the event."""
    revoked = replace(device, status=REVOKED, revoked_at=now)
    tx.put_device(revoked)
    tx.append("device.revoked", device_event_data(device, actor, **extra), now)
    _settle_pending_of(tx, device.id, "rejected", actor, now)
    return revoked


def _settle_pending_of(tx: Tx, device_id: str, decision: str, actor: str, now: float) -> None:
    pending = tx.pending_of(device_id)
    if pending is not None:
        _settle(tx, pending, decision, actor, now)


def _refresh(
    tx: Tx, existing: PairingRequest, candidate: PairingRequest, *, renew_expiry: bool
) -> PairingRequest:
    """The device asked again before its request expired: same id and age, fresh details.

    Without ``renew_expiry`` the request keeps its expiry, so a page that
    re-checks every few seconds cannot keep a request alive for ever.
    """
    now = candidate.created_at
    refreshed = replace(candidate, id=existing.id, created_at=existing.created_at)
    if not renew_expiry:
        refreshed = replace(refreshed, expires_at=existing.expires_at)
    tx.put_request(StoredRequest(refreshed, PENDING), keep_until=pending_keep_until(refreshed, now))
    changed = (existing.role, existing.reason, existing.name) != (
        refreshed.role,
        refreshed.reason,
        refreshed.name,
    )
    if changed:
        tx.append(
            "pairing.requested",
            request_event_data(refreshed, expires_at=refreshed.expires_at, refreshed=True),
            now,
        )
    return refreshed
