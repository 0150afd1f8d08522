"""How the Redis backend lays records out: keys, JSON records, and the plan of one commit.

Every key lives under ``<prefix>:`` (``?prefix=`` in ``store.url``, default
``edge``), so one Redis can serve several gateways. Records are JSON strings:

    dev:<id>            a device              tok:<hash>      its token hash -> device id
    req:<id>            a pairing request     pend:dev:<id>   a device's pending request id
                                              last:dev:<id>   its last settled request id
    inv:<id>            an invite             invcode:<hash>  an invite code hash -> invite id
    fail:<client>       a failure counter     devices, invites  ids by creation time (zsets)
    pending, pend:addr:<ip>, pend:noaddr      pending request ids by expiry (zsets; the caps)
    seq                 the event counter     events          the event stream (ids ``<seq>-0``)
    meta                application and schema version
    <purpose>:<seq>     which process claimed an event (``SET NX``)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from edge.pairing.models import Device, Event, Invite, PairingRequest, Role
from edge.pairing.store.base import EVENT_LOG_MAX_EVENTS, FailureCount, StoredRequest

REPLAY_MEMORY_MS = 60_000  # far longer than redis-py's retries of one command


class Keys:
    """The name of every key of one store (one prefix)."""

    def __init__(self, prefix: str) -> None:
        self.base = f"{prefix}:"
        self.meta = f"{prefix}:meta"
        self.seq = f"{prefix}:seq"
        self.events = f"{prefix}:events"
        self.devices = f"{prefix}:devices"
        self.invites = f"{prefix}:invites"
        self.pending = f"{prefix}:pending"
        self.device_prefix = f"{prefix}:dev:"
        self.request_prefix = f"{prefix}:req:"
        self.invite_prefix = f"{prefix}:inv:"
        self.failure_prefix = f"{prefix}:fail:"

    def device(self, device_id: str) -> str:
        return self.device_prefix + device_id

    def token(self, token_hash: str) -> str:
        return f"{self.base}tok:{token_hash}"

    def request(self, request_id: str) -> str:
        return self.request_prefix + request_id

    def pending_of(self, device_id: str) -> str:
        return f"{self.base}pend:dev:{device_id}"

    def pending_from(self, client_key: str | None) -> str:
        """The pending requests of one client (``PairingRequest.client_key``)."""
        if client_key is None:
            return f"{self.base}pend:noaddr"
        return f"{self.base}pend:addr:{client_key}"

    def settled_of(self, device_id: str) -> str:
        """The id of the device's last settled request (while that record is kept)."""
        return f"{self.base}last:dev:{device_id}"

    def invite(self, invite_id: str) -> str:
        return self.invite_prefix + invite_id

    def invite_code(self, code_hash: str) -> str:
        return f"{self.base}invcode:{code_hash}"

    def failure(self, client: str) -> str:
        return self.failure_prefix + client

    def op(self, op_id: str) -> str:
        return f"{self.base}op:{op_id}"

    def claim(self, purpose: str, seq: int) -> str:
        return f"{self.base}{purpose}:{seq}"


def number(value: float) -> str:
    """A float as Redis and Lua read it back exactly (``repr`` round-trips)."""
    return repr(float(value))


def ttl_ms(seconds: float) -> str:
    return str(max(1000, math.ceil(seconds * 1000)))


class Plan:
    """What one atomic commit checks, appends and writes."""

    def __init__(self) -> None:
        self.guards: list[str] = []
        self.writes: list[str] = []
        self.events: list[str] = []
        self._expected: dict[str, str | None] = {}

    @property
    def empty(self) -> bool:
        return not (self.writes or self.events)

    def expect(self, key: str, raw: str | None) -> None:
        """The commit holds only if ``key`` still has the value read (None: still absent)."""
        if key in self._expected:
            return
        self._expected[key] = raw
        self.guards += ["absent", key, "", ""] if raw is None else ["is", key, raw, ""]

    def free(self, key: str, owner: str) -> None:
        self.guards += ["free", key, owner, ""]

    def below(self, key: str, after: float, limit: int) -> None:
        """Members of zset ``key`` scored above ``after`` must still be fewer than ``limit``."""
        self.guards += ["below", key, number(after), str(limit)]

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self.writes += ["set", key, value, "0" if ttl is None else ttl_ms(ttl), ""]

    def delete(self, key: str) -> None:
        self.writes += ["del", key, "", "", ""]

    def delete_if(self, key: str, value: str) -> None:
        self.writes += ["delif", key, value, "", ""]

    def zadd(self, key: str, score: float, member: str, key_ttl: float | None = None) -> None:
        ttl = "0" if key_ttl is None else ttl_ms(key_ttl)
        self.writes += ["zadd", key, number(score), member, ttl]

    def zrem(self, key: str, member: str) -> None:
        self.writes += ["zrem", key, member, "", ""]

    def event(self, type_: str, data: Mapping[str, object], at: float) -> None:
        self.events += [type_, json.dumps(dict(data), separators=(",", ":")), number(at)]

    def argv(self, op_key: str, keys: Keys) -> list[str]:
        return [
            op_key,
            keys.seq,
            keys.events,
            str(EVENT_LOG_MAX_EVENTS),
            str(REPLAY_MEMORY_MS),
            str(len(self.guards) // 4),
            *self.guards,
            str(len(self.writes) // 5),
            *self.writes,
            str(len(self.events) // 3),
            *self.events,
        ]


def _dump(record: Mapping[str, object]) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def device_json(device: Device) -> str:
    return _dump(asdict(device))  # Role is a str enum: it is written as its value


def request_json(stored: StoredRequest) -> str:
    return _dump(
        {
            **asdict(stored.request),
            "status": stored.status,
            "resolved_at": stored.resolved_at,
            "resolved_by": stored.resolved_by,
        }
    )


def invite_json(invite: Invite) -> str:
    return _dump(asdict(invite))


def failure_json(window_start: float, count: int, locked_until: float) -> str:
    return _dump({"window_start": window_start, "count": count, "locked_until": locked_until})


class Damaged(Exception):
    """A stored record is not what Edge writes."""


def _fields(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise Damaged("a record is not JSON") from None
    if not isinstance(data, dict):
        raise Damaged("a record is not a JSON object")
    return data


def _text(data: Mapping[str, Any], name: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if isinstance(value, str) or (optional and value is None):
        return value
    raise Damaged(f"field {name!r} is {value!r}")


def _time(data: Mapping[str, Any], name: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if optional and value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise Damaged(f"field {name!r} is {value!r}")


def _role(data: Mapping[str, Any]) -> Role:
    role = Role.parse(data.get("role"))
    if role is None:
        raise Damaged(f"unknown role {data.get('role')!r}")
    return role


def parse_device(raw: str) -> Device:
    data = _fields(raw)
    return Device(
        id=_text(data, "id"),
        public_key=_text(data, "public_key"),
        name=_text(data, "name"),
        role=_role(data),
        status=_text(data, "status"),
        token_hash=_text(data, "token_hash", optional=True),
        created_at=_time(data, "created_at"),
        approved_by=_text(data, "approved_by"),
        last_seen_at=_time(data, "last_seen_at", optional=True),
        last_ip=_text(data, "last_ip", optional=True),
        revoked_at=_time(data, "revoked_at", optional=True),
        user=_text(data, "user", optional=True),  # absent in records from before users
    )


def parse_request(raw: str) -> StoredRequest:
    data = _fields(raw)
    request = PairingRequest(
        id=_text(data, "id"),
        device_id=_text(data, "device_id"),
        public_key=_text(data, "public_key"),
        name=_text(data, "name"),
        client_ip=_text(data, "client_ip", optional=True),
        user_agent=_text(data, "user_agent", optional=True),
        role=_role(data),
        reason=_text(data, "reason"),
        created_at=_time(data, "created_at"),
        expires_at=_time(data, "expires_at"),
        client_key=_text(data, "client_key", optional=True),
    )
    return StoredRequest(
        request,
        _text(data, "status"),
        _time(data, "resolved_at", optional=True),
        _text(data, "resolved_by", optional=True),
    )


def parse_invite(raw: str) -> Invite:
    data = _fields(raw)
    return Invite(
        id=_text(data, "id"),
        code_hash=_text(data, "code_hash"),
        role=_role(data),
        name=_text(data, "name", optional=True),
        created_at=_time(data, "created_at"),
        expires_at=_time(data, "expires_at"),
        created_by=_text(data, "created_by"),
        used_at=_time(data, "used_at", optional=True),
        used_by_device=_text(data, "used_by_device", optional=True),
    )


def parse_failure(client: str, raw: str) -> FailureCount:
    data = _fields(raw)
    count = data.get("count")
    if not isinstance(count, int) or isinstance(count, bool):
        raise Damaged(f"field 'count' is {count!r}")
    return FailureCount(client, _time(data, "window_start"), count, _time(data, "locked_until"))


def parse_event(entry_id: str, fields: Mapping[str, Any]) -> Event:
    try:
        seq = int(str(entry_id).split("-", 1)[0])
        data = json.loads(fields["data"])
        at = float(fields["at"])
        type_ = str(fields["type"])
    except (KeyError, ValueError, TypeError):
        raise Damaged(f"event {entry_id} is not an Edge event") from None
    if not isinstance(data, dict):
        raise Damaged(f"event {entry_id} holds no JSON object")
    return Event(seq=seq, type=type_, data=data, at=at)
