"""The Redis ``Tx``: reads that remember what they saw, writes gathered into one ``Plan``.

A step reads with ordinary commands; every record it reads on its own
(``device``, ``request``, ``pending_of``...) becomes a guard of the plan ("this
key still holds what was read"), and so does every record it writes. A cap
read (``pending_below``) becomes a "still below" guard. The commit script
checks every guard and applies the writes and events as one step, or answers
a conflict, and the backend runs the step again on fresh reads. Records read
in bulk (``devices``, ``inactive_devices``) are guarded only where written.

Nothing here decides anything about pairing: which index a record belongs
in, and how long Redis keeps it, is all.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import redis

from edge.pairing.models import PAIRED, Device, Event, Invite, PairingRequest, Role
from edge.pairing.store.base import PENDING, FailureCount, StoredRequest, StoreError
from edge.pairing.store.redis_records import (
    Damaged,
    Keys,
    Plan,
    device_json,
    failure_json,
    invite_json,
    number,
    parse_device,
    parse_event,
    parse_failure,
    parse_invite,
    parse_request,
    request_json,
)
from edge.request_ids import stamped

LIST_SCRIPT = "list.lua"
SCAN_SCRIPT = "scan_values.lua"
FOLLOW_SCRIPT = "follow.lua"


class RedisReader:
    """Plain reads; ``RedisTx`` adds what a commit must check."""

    def __init__(self, client: redis.Redis, keys: Keys, scripts: Mapping[str, Any]) -> None:
        self.client = client
        self.keys = keys
        self._scripts = scripts

    # -- what guards hook into -------------------------------------------------------------

    def _get(self, key: str) -> str | None:
        value = self.client.get(key)
        return None if value is None else str(value)

    def _follow(self, index_key: str, record_prefix: str) -> tuple[str | None, str | None]:
        """The value of an index key and the record it points at (None, None when unset)."""
        reply = self._scripts[FOLLOW_SCRIPT](args=[index_key, record_prefix])
        if not reply:
            return None, None
        return str(reply[0]), None if reply[1] is None else str(reply[1])

    def _seen(self, key: str, raw: str | None) -> None:
        """A record read in bulk (no guard unless it is written)."""

    def _listing(
        self, zset: str, record_prefix: str, low: str = "", high: str = ""
    ) -> list[tuple[str, str | None]]:
        reply = self._scripts[LIST_SCRIPT](args=[zset, record_prefix, low, high])
        listing = [
            (str(reply[n]), None if reply[n + 1] is None else str(reply[n + 1]))
            for n in range(0, len(reply), 2)
        ]
        for member, raw in listing:
            self._seen(record_prefix + member, raw)
        return listing

    # -- devices ---------------------------------------------------------------------------

    def device(self, device_id: str) -> Device | None:
        raw = self._get(self.keys.device(device_id))
        return None if raw is None else parse_device(raw)

    def devices(self, device_ids: Collection[str]) -> dict[str, Device]:
        ids = list(device_ids)
        keys = [self.keys.device(device_id) for device_id in ids]
        found = {}
        for device_id, key, raw in zip(ids, keys, self.client.mget(keys), strict=True):
            if raw is not None:
                self._seen(key, str(raw))
                found[device_id] = parse_device(str(raw))
        return found

    def device_for_token(self, token_hash: str) -> Device | None:
        _, raw = self._follow(self.keys.token(token_hash), self.keys.device_prefix)
        if raw is None:
            return None
        device = parse_device(raw)
        return device if device.token_hash == token_hash else None

    def _all_devices(self) -> list[Device]:
        listing = self._listing(self.keys.devices, self.keys.device_prefix)
        return [parse_device(raw) for _, raw in listing if raw is not None]

    def list_devices(self, *, include_revoked: bool) -> list[Device]:
        return [d for d in self._all_devices() if include_revoked or d.status == PAIRED]

    def inactive_devices(self, before: float) -> list[Device]:
        return [
            d
            for d in self._all_devices()
            if (d.last_seen_at if d.last_seen_at is not None else d.created_at) < before
        ]

    # -- requests --------------------------------------------------------------------------

    def request(self, request_id: str) -> StoredRequest | None:
        raw = self._get(self.keys.request(request_id))
        return None if raw is None else parse_request(raw)

    def pending_of(self, device_id: str) -> PairingRequest | None:
        _, raw = self._follow(self.keys.pending_of(device_id), self.keys.request_prefix)
        if raw is None:
            return None
        stored = parse_request(raw)
        return stored.request if stored.status == PENDING else None

    def last_settled_of(self, device_id: str) -> StoredRequest | None:
        _, raw = self._follow(self.keys.settled_of(device_id), self.keys.request_prefix)
        if raw is None:
            return None
        stored = parse_request(raw)
        return stored if stored.status != PENDING else None

    def _pending_listing(self, low: str, high: str) -> list[tuple[str, StoredRequest | None]]:
        listing = self._listing(self.keys.pending, self.keys.request_prefix, low, high)
        return [(member, None if raw is None else parse_request(raw)) for member, raw in listing]

    def pending_requests(self, now: float) -> list[PairingRequest]:
        listing = self._pending_listing("(" + number(now), "+inf")
        found = [s.request for _, s in listing if s is not None and s.status == PENDING]
        return sorted(found, key=lambda r: (r.created_at, r.id))

    def expired_requests(self, now: float) -> list[PairingRequest]:
        found = []
        for member, stored in self._pending_listing("-inf", number(now)):
            if stored is None or stored.status != PENDING:
                self._stale_pending(member)
                continue
            found.append(stored.request)
        return sorted(found, key=lambda r: (r.created_at, r.id))

    def _stale_pending(self, request_id: str) -> None:
        """An index entry of a request that is settled or gone (dropped by a ``RedisTx``)."""

    def _count_below(self, zset: str, limit: int, now: float) -> bool:
        return int(self.client.zcount(zset, "(" + number(now), "+inf")) < limit

    def pending_below(self, limit: int, now: float) -> bool:
        return self._count_below(self.keys.pending, limit, now)

    def client_pending_below(self, client_key: str | None, limit: int, now: float) -> bool:
        return self._count_below(self.keys.pending_from(client_key), limit, now)

    # -- invites, failures, events ----------------------------------------------------------

    def invite(self, invite_id: str) -> Invite | None:
        raw = self._get(self.keys.invite(invite_id))
        return None if raw is None else parse_invite(raw)

    def invite_by_code(self, code_hash: str) -> Invite | None:
        _, raw = self._follow(self.keys.invite_code(code_hash), self.keys.invite_prefix)
        if raw is None:
            return None
        invite = parse_invite(raw)
        return invite if invite.code_hash == code_hash else None

    def list_invites(self) -> list[Invite]:
        listing = self._listing(self.keys.invites, self.keys.invite_prefix)
        return [parse_invite(raw) for _, raw in listing if raw is not None]

    def failure(self, client: str) -> FailureCount | None:
        raw = self._get(self.keys.failure(client))
        return None if raw is None else parse_failure(client, raw)

    def failures(self) -> list[FailureCount]:
        reply = self._scan(self.keys.failure_prefix + "*")
        start = len(self.keys.failure_prefix)
        return [
            parse_failure(str(reply[n])[start:], str(reply[n + 1])) for n in range(0, len(reply), 2)
        ]

    def _scan(self, pattern: str) -> list[Any]:
        """Every string key matching ``pattern`` with its value (a SCAN: operators' listings)."""
        return list(self._scripts[SCAN_SCRIPT](args=[pattern]))

    def latest_seq(self) -> int:
        value = self.client.get(self.keys.seq)
        if value is None:
            return 0
        if not str(value).isdigit():
            raise Damaged(f"the event counter is {value!r}")
        return int(value)

    def events_after(self, seq: int, limit: int) -> list[Event]:
        start = f"{max(0, seq) + 1}-0"
        entries: Any = self.client.xrange(self.keys.events, start, "+", count=limit)
        return [parse_event(entry_id, fields) for entry_id, fields in entries]

    def counts(self, now: float) -> tuple[int, dict[str, int]]:
        pending = int(self.client.zcount(self.keys.pending, "(" + number(now), "+inf"))
        by_role = {role.value: 0 for role in Role}
        for device in self._all_devices():
            if device.status == PAIRED:
                by_role[device.role.value] += 1
        return pending, by_role


class RedisTx(RedisReader):
    """One attempt at a step: reads guarded, writes and events planned, committed by the backend."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Mapping[str, Any],
        *,
        now: float,
        name: str,
    ) -> None:
        super().__init__(client, keys, scripts)
        self.plan = Plan()
        self.now = now
        self._name = name
        self._known: dict[str, str | None] = {}  # what this step saw (and wrote) per key

    # -- guarded reads -----------------------------------------------------------------------

    def _get(self, key: str) -> str | None:
        if key not in self._known:
            self._known[key] = super()._get(key)
            self.plan.expect(key, self._known[key])
        return self._known[key]

    def _follow(self, index_key: str, record_prefix: str) -> tuple[str | None, str | None]:
        if index_key in self._known:
            value = self._known[index_key]
            return value, None if value is None else self._get(record_prefix + value)
        value, raw = super()._follow(index_key, record_prefix)
        self._known[index_key] = value
        self.plan.expect(index_key, value)
        if value is not None:
            self._known.setdefault(record_prefix + value, raw)
            self.plan.expect(record_prefix + value, self._known[record_prefix + value])
        return value, None if value is None else self._known[record_prefix + value]

    def _seen(self, key: str, raw: str | None) -> None:
        self._known.setdefault(key, raw)

    def _stale_pending(self, request_id: str) -> None:
        self.plan.zrem(self.keys.pending, request_id)

    def _count_below(self, zset: str, limit: int, now: float) -> bool:
        below = super()._count_below(zset, limit, now)
        if below:
            self.plan.below(zset, now, limit)
        return below

    def _before_write(self, key: str) -> str | None:
        """What ``key`` held when this step first saw it; the commit requires it still does."""
        raw = self._get(key)
        self.plan.expect(key, raw)
        return raw

    def _ttl(self, keep_until: float) -> float:
        return max(0.0, keep_until - self.now)

    # -- writes ------------------------------------------------------------------------------

    def put_device(self, device: Device) -> None:
        keys, plan = self.keys, self.plan
        key = keys.device(device.id)
        raw = self._before_write(key)
        existing = None if raw is None else parse_device(raw)
        if existing is not None and existing.token_hash not in (None, device.token_hash):
            plan.delete_if(keys.token(existing.token_hash), device.id)
        if device.token_hash is not None:
            owner = self.client.get(keys.token(device.token_hash))
            if owner is not None and str(owner) != device.id:
                raise StoreError(
                    f"{self._name}: the token hash of device {device.id[:12]} is already held "
                    "by another device; nothing was changed"
                )
            plan.free(keys.token(device.token_hash), device.id)
            plan.set(keys.token(device.token_hash), device.id)
        record = device_json(device)
        self._known[key] = record
        plan.set(key, record)
        plan.zadd(keys.devices, device.created_at, device.id)

    def delete_device(self, device: Device) -> None:
        key = self.keys.device(device.id)
        self._before_write(key)
        self._known[key] = None
        self.plan.delete(key)
        self.plan.zrem(self.keys.devices, device.id)
        if device.token_hash is not None:
            self.plan.delete_if(self.keys.token(device.token_hash), device.id)

    def put_request(self, stored: StoredRequest, *, keep_until: float) -> None:
        keys, plan, request = self.keys, self.plan, stored.request
        key = keys.request(request.id)
        raw = self._before_write(key)
        previous = None if raw is None else parse_request(raw)
        ttl = self._ttl(keep_until)
        record = request_json(stored)
        self._known[key] = record
        if stored.status == PENDING:
            if previous is not None and previous.request.client_key != request.client_key:
                plan.zrem(keys.pending_from(previous.request.client_key), request.id)
            pending_writes(plan, keys, request, ttl)
        else:
            plan.set(key, record, ttl)
            plan.set(keys.settled_of(request.device_id), request.id, ttl)
            plan.delete_if(keys.pending_of(request.device_id), request.id)
            plan.zrem(keys.pending, request.id)
            plan.zrem(keys.pending_from(request.client_key), request.id)

    def put_invite(self, invite: Invite, *, keep_until: float) -> None:
        key = self.keys.invite(invite.id)
        self._before_write(key)
        ttl = self._ttl(keep_until)
        record = invite_json(invite)
        self._known[key] = record
        self.plan.set(key, record, ttl)
        self.plan.set(self.keys.invite_code(invite.code_hash), invite.id, ttl)
        self.plan.zadd(self.keys.invites, invite.created_at, invite.id)

    def delete_invite(self, invite: Invite) -> None:
        key = self.keys.invite(invite.id)
        self._before_write(key)
        self._known[key] = None
        self.plan.delete(key)
        self.plan.delete_if(self.keys.invite_code(invite.code_hash), invite.id)
        self.plan.zrem(self.keys.invites, invite.id)

    def put_failure(self, failure: FailureCount, *, keep_until: float) -> None:
        key = self.keys.failure(failure.client)
        self._before_write(key)
        record = failure_json(failure.window_start, failure.count, failure.locked_until)
        self._known[key] = record
        self.plan.set(key, record, self._ttl(keep_until))

    def append(self, type_: str, data: Mapping[str, object], at: float) -> None:
        self.plan.event(type_, stamped(data), at)


def pending_writes(plan: Plan, keys: Keys, request: PairingRequest, ttl: float) -> None:
    """A pending request and its indexes, all dropped by Redis ``ttl`` seconds from now."""
    plan.set(keys.request(request.id), request_json(StoredRequest(request, PENDING)), ttl)
    plan.set(keys.pending_of(request.device_id), request.id, ttl)
    plan.zadd(keys.pending, request.expires_at, request.id)
    plan.zadd(keys.pending_from(request.client_key), request.expires_at, request.id, ttl)
