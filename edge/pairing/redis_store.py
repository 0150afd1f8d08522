"""The Redis store: one Redis shared by every replica of the gateway.

Every key lives under ``<prefix>:`` (``?prefix=`` in ``store.url``, default
``edge``), so one Redis can serve several gateways. Records are JSON strings:

    dev:<id>            a device              tok:<hash>      its token hash -> device id
    req:<id>            a pairing request     pend:dev:<id>   a device's pending request id
    inv:<id>            an invite             invcode:<hash>  an invite code hash -> invite id
    fail:<client>       a failure counter     devices, invites  ids by creation time (zsets)
    pending, pend:addr:<ip>, pend:noaddr      pending request ids by expiry (zsets; the caps)
    seq                 the event counter     events          the event stream (ids ``<seq>-0``)
    meta                application and schema version

How a change stays atomic: a mutator reads what it needs, decides in Python
with the same domain functions as the SQLite store, and hands the result to
one Lua script (``_COMMIT``) as a plan: guards (the records read are
unchanged, a cap still has room), events and writes. The script checks the
guards, appends the events (INCR the counter, XADD with id ``<seq>-0`` and
``MAXLEN ~``) and applies the writes as one step; Redis runs nothing in
between, and the AOF and replicas receive it as one transaction. A guard that
no longer holds means another replica got there first: the mutator reads
again and decides again, so two approvals of one request give exactly one
RESOLVED. Each plan carries an id the script remembers for a minute, so a
plan re-sent after a lost reply (redis-py retries) is not applied twice.

Expiry is decided by comparing the caller's clock with ``expires_at``, as in
SQLite, because expiring a request writes an event. Redis's own TTLs remove
what is no longer needed (settled requests, used invites, old counters) even
when no gateway runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from edge.pairing.codes import new_request_id
from edge.pairing.models import (
    PAIRED,
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
)
from edge.pairing.store import (
    EVENT_LOG_MAX_AGE,
    EVENT_LOG_MAX_EVENTS,
    MAX_EVENTS_PER_READ,
    RESOLVED_RETENTION,
    FailureCount,
    PendingCapHit,
    Resolution,
    ResolveStatus,
    Seen,
    StoredRequest,
    StoreError,
    StoreSnapshot,
)

SCHEMA_VERSION = 1
APPLICATION = "edge"
DEFAULT_PREFIX = "edge"
MIN_REDIS_VERSION = (6, 2)  # XTRIM MINID and exclusive XRANGE bounds
DEFAULT_SOCKET_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 1.0  # a down Redis must not hold a request for long
DEFAULT_RETRIES = 2  # per command, 50-500 ms apart: rides out a restart's first refusals
COMMIT_ATTEMPTS = 64
FAILURE_GRACE = 60.0  # a failure counter outlives its window or lockout by this much
REPLAY_MEMORY_MS = 60_000  # far longer than redis-py's retries of one command
BATCH = 500
T = TypeVar("T")

_PENDING = "pending"
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_FLOAT_OPTIONS = {"socket_timeout", "socket_connect_timeout"}
_INT_OPTIONS = {"health_check_interval": 0, "max_connections": 1, "retries": 0}
_TLS_FILES = {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}
_TLS_OPTIONS = _TLS_FILES | {"ssl_ca_path", "ssl_cert_reqs", "ssl_check_hostname"}
_KNOWN_OPTIONS = (
    {"db", "prefix", "password", "username", "client_name"}
    | _FLOAT_OPTIONS
    | set(_INT_OPTIONS)
    | _TLS_OPTIONS
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# -- store.url ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisTarget:
    """What a ``redis://``, ``rediss://`` or ``unix://`` store URL asks for, checked."""

    display: str  # the URL without password or query, for messages
    prefix: str
    connection: Mapping[str, Any] = field(repr=False)  # keyword arguments of redis.Redis
    retries: int = DEFAULT_RETRIES


def parse_redis_url(url: str) -> RedisTarget:
    """Check ``store.url`` for the Redis store; StoreError names the problem, never the password.

    ``redis://[user:password@]host[:port][/db][?options]``, ``rediss://`` for
    TLS, ``unix:///path/to/redis.sock[?db=N]``. Options: ``prefix`` (key
    prefix, default ``edge``), ``password``, ``username``, ``db``,
    ``socket_timeout``, ``socket_connect_timeout``, ``retries``,
    ``health_check_interval``, ``max_connections``, ``client_name`` and, for
    ``rediss://``, ``ssl_ca_certs``, ``ssl_ca_path``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_cert_reqs`` (none, optional, required) and
    ``ssl_check_hostname``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
    except ValueError as exc:
        raise StoreError(f"store.url: not a valid Redis URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"redis", "rediss", "unix"}:
        raise StoreError(f"store.url: {scheme!r} is not a Redis scheme (redis, rediss or unix)")
    host = parts.hostname or ""
    if scheme == "unix":
        if host or port is not None:
            raise StoreError(
                "store.url: a unix:// URL names a socket file, not a host: "
                "unix:///run/redis/redis.sock?db=0"
            )
        if not parts.path or parts.path == "/":
            raise StoreError("store.url: the unix:// URL names no socket file")
        display = f"unix://{parts.path}"
    else:
        display = f"{scheme}://{_host_for_display(host or 'localhost')}:{port or 6379}"
    options = _query_options(parts.query)
    if "password" in options and password is not None:
        raise StoreError("store.url: the password is given twice (in the URL and in ?password=)")
    if "username" in options and username is not None:
        raise StoreError("store.url: the user name is given twice (in the URL and in ?username=)")
    db = _db_number(parts.path if scheme != "unix" else "", options.pop("db", None))
    display += f"/{db}"
    prefix = options.pop("prefix", DEFAULT_PREFIX)
    if not _PREFIX_RE.fullmatch(prefix):
        raise StoreError(
            f"store.url: prefix {prefix!r} must be 1-64 letters, digits, '_', '.' or '-'"
        )
    if prefix != DEFAULT_PREFIX:
        display += f" (key prefix {prefix!r})"
    connection: dict[str, Any] = {
        "db": db,
        "username": options.pop("username", username),
        "password": options.pop("password", password),
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "decode_responses": True,
    }
    if scheme == "unix":
        connection["unix_socket_path"] = parts.path
    else:
        connection["host"] = host or "localhost"
        connection["port"] = port or 6379
    for name in _FLOAT_OPTIONS & options.keys():
        connection[name] = _seconds(name, options.pop(name))
    retries = DEFAULT_RETRIES
    for name, minimum in _INT_OPTIONS.items():
        if name in options:
            value = _integer(name, options.pop(name), minimum)
            if name == "retries":
                retries = value
            else:
                connection[name] = value
    if "client_name" in options:
        connection["client_name"] = options.pop("client_name")
    tls = {name: options.pop(name) for name in _TLS_OPTIONS & options.keys()}
    if tls and scheme != "rediss":
        raise StoreError(
            f"store.url: {sorted(tls)[0]} needs TLS; use rediss:// instead of {scheme}://"
        )
    if scheme == "rediss":
        connection.update(_tls_options(tls))
    return RedisTarget(display=display, prefix=prefix, connection=connection, retries=retries)


def _host_for_display(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _query_options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StoreError("store.url: the query after '?' is not name=value pairs") from None
    for name, value in pairs:
        if name not in _KNOWN_OPTIONS:
            known = ", ".join(sorted(_KNOWN_OPTIONS))
            raise StoreError(f"store.url: unknown option {name!r} (known: {known})")
        if name in options:
            raise StoreError(f"store.url: option {name!r} is given twice")
        if not value:
            raise StoreError(f"store.url: option {name!r} has no value")
        options[name] = value
    return options


def _db_number(path: str, query_db: str | None) -> int:
    from_path = unquote(path).strip("/")
    if from_path and query_db is not None:
        raise StoreError("store.url: the database number is given twice (path and ?db=)")
    text = query_db if query_db is not None else (from_path or "0")
    if not text.isdigit() or len(text) > 5:
        raise StoreError(f"store.url: database {text!r} must be a number such as /0")
    return int(text)


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise StoreError(f"store.url: {name} must be a number of seconds above 0, not {text!r}")
    return value


def _integer(name: str, text: str, minimum: int) -> int:
    if not text.isdigit() or int(text) < minimum or len(text) > 9:
        raise StoreError(f"store.url: {name} must be a whole number of at least {minimum}")
    return int(text)


def _tls_options(tls: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {"ssl": True}
    for name in _TLS_FILES & tls.keys():
        if not Path(tls[name]).is_file():
            raise StoreError(f"store.url: {name} {tls[name]!r} is not a readable file")
        options[name] = tls[name]
    if "ssl_ca_path" in tls:
        if not Path(tls["ssl_ca_path"]).is_dir():
            raise StoreError(f"store.url: ssl_ca_path {tls['ssl_ca_path']!r} is not a directory")
        options["ssl_ca_path"] = tls["ssl_ca_path"]
    if "ssl_cert_reqs" in tls:
        if tls["ssl_cert_reqs"] not in {"none", "optional", "required"}:
            raise StoreError("store.url: ssl_cert_reqs must be none, optional or required")
        options["ssl_cert_reqs"] = tls["ssl_cert_reqs"]
    if "ssl_check_hostname" in tls:
        flag = tls["ssl_check_hostname"].lower()
        if flag not in _TRUE | _FALSE:
            raise StoreError("store.url: ssl_check_hostname must be true or false")
        options["ssl_check_hostname"] = flag in _TRUE
    if options.get("ssl_cert_reqs") == "none":  # nothing is verified, so neither is the name
        if options.get("ssl_check_hostname"):
            raise StoreError(
                "store.url: ssl_check_hostname=true needs the certificate checked "
                "(ssl_cert_reqs=required)"
            )
        options["ssl_check_hostname"] = False
    return options


# -- Lua ------------------------------------------------------------------------------------------

# ARGV: op key, seq key, stream key, max stream length, then counted groups:
# guards (kind, key, a, b), writes (kind, key, a, b, c), events (type, data, at).
_COMMIT = """
local argv = ARGV
local done = redis.call('GET', argv[1])
if done then return {'replayed', done} end
local seq_key, stream_key, maxlen = argv[2], argv[3], argv[4]
local i = 5
for g = 1, tonumber(argv[i]) do
  local kind, key, a, b = argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4]
  i = i + 4
  local holds
  if kind == 'is' then
    holds = redis.call('GET', key) == a
  elseif kind == 'absent' then
    holds = redis.call('EXISTS', key) == 0
  elseif kind == 'free' then
    local value = redis.call('GET', key)
    holds = value == false or value == a
  elseif kind == 'below' then
    holds = redis.call('ZCOUNT', key, '(' .. a, '+inf') < tonumber(b)
  else
    return redis.error_reply('ERR edge commit: unknown guard ' .. tostring(kind))
  end
  if not holds then return {'conflict', key} end
end
i = i + 1
local writes_at, writes = i, tonumber(argv[i])
for w = 1, writes do
  local kind = argv[i + 1]
  if kind ~= 'set' and kind ~= 'del' and kind ~= 'delif' and kind ~= 'zadd'
      and kind ~= 'zrem' then
    return redis.error_reply('ERR edge commit: unknown write ' .. tostring(kind))
  end
  i = i + 5
end
i = i + 1
local seq = 0
for e = 1, tonumber(argv[i]) do
  seq = redis.call('INCR', seq_key)
  redis.call('XADD', stream_key, 'MAXLEN', '~', maxlen, seq .. '-0', 'seq', seq,
    'type', argv[i + 1], 'data', argv[i + 2], 'at', argv[i + 3])
  i = i + 3
end
i = writes_at
for w = 1, writes do
  local kind, key, a, b, c = argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4], argv[i + 5]
  i = i + 5
  if kind == 'set' then
    if b == '0' then redis.call('SET', key, a) else redis.call('SET', key, a, 'PX', b) end
  elseif kind == 'del' then
    redis.call('DEL', key)
  elseif kind == 'delif' then
    if redis.call('GET', key) == a then redis.call('DEL', key) end
  elseif kind == 'zadd' then
    redis.call('ZADD', key, a, b)
    if c ~= '0' then
      local ttl = redis.call('PTTL', key)
      if ttl == -1 or ttl < tonumber(c) then redis.call('PEXPIRE', key, c) end
    end
  else
    redis.call('ZREM', key, a)
  end
end
redis.call('SET', argv[1], seq, 'PX', REPLAY_MS)
return {'ok', seq}
""".replace("REPLAY_MS", str(REPLAY_MEMORY_MS))

# ARGV: index key, record key prefix -> {index value, record} or {}.
_FOLLOW = """
local id = redis.call('GET', ARGV[1])
if not id then return {} end
return {id, redis.call('GET', ARGV[2] .. id)}
"""

# ARGV: zset key, record key prefix, min score or '' for all, max score -> id, record, ...
_LIST = """
local ids
if ARGV[3] == '' then
  ids = redis.call('ZRANGE', ARGV[1], 0, -1)
else
  ids = redis.call('ZRANGEBYSCORE', ARGV[1], ARGV[3], ARGV[4])
end
local out = {}
for start = 1, #ids, 500 do
  local keys = {}
  for n = start, math.min(start + 499, #ids) do keys[#keys + 1] = ARGV[2] .. ids[n] end
  local values = redis.call('MGET', unpack(keys))
  for n = 1, #keys do
    out[#out + 1] = ids[start + n - 1]
    out[#out + 1] = values[n]
  end
end
return out
"""

# ARGV: meta key, application, schema -> {application, schema}
_INIT = """
redis.call('HSETNX', ARGV[1], 'application', ARGV[2])
redis.call('HSETNX', ARGV[1], 'schema', ARGV[3])
return redis.call('HMGET', ARGV[1], 'application', 'schema')
"""

# ARGV: stream, max length, oldest 'at' to keep, pending, invites, invite key prefix, stale score
_HOUSEKEEPING = """
local stream = ARGV[1]
redis.call('XTRIM', stream, 'MAXLEN', ARGV[2])
local cutoff = tonumber(ARGV[3])
local start = '-'
while true do
  local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', 200)
  if #batch == 0 then
    redis.call('XTRIM', stream, 'MAXLEN', 0)
    break
  end
  local keep = nil
  for _, entry in ipairs(batch) do
    local fields, at = entry[2], nil
    for f = 1, #fields, 2 do
      if fields[f] == 'at' then at = tonumber(fields[f + 1]) end
    end
    if at == nil or at >= cutoff then
      keep = entry[1]
      break
    end
  end
  if keep then
    redis.call('XTRIM', stream, 'MINID', keep)
    break
  end
  start = '(' .. batch[#batch][1]
end
redis.call('ZREMRANGEBYSCORE', ARGV[4], '-inf', '(' .. ARGV[7])
for _, id in ipairs(redis.call('ZRANGE', ARGV[5], 0, -1)) do
  if redis.call('EXISTS', ARGV[6] .. id) == 0 then redis.call('ZREM', ARGV[5], id) end
end
return 1
"""

# ARGV: key pattern -> key, value, ... for every string key matching it.
_SCAN_VALUES = """
local out, cursor = {}, '0'
repeat
  local reply = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    local value = redis.call('GET', key)
    if value then
      out[#out + 1] = key
      out[#out + 1] = value
    end
  end
until cursor == '0'
return out
"""


# -- keys and plans -------------------------------------------------------------------------------


class _Keys:
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

    def invite(self, invite_id: str) -> str:
        return self.invite_prefix + invite_id

    def invite_code(self, code_hash: str) -> str:
        return f"{self.base}invcode:{code_hash}"

    def failure(self, client: str) -> str:
        return self.failure_prefix + client

    def op(self, op_id: str) -> str:
        return f"{self.base}op:{op_id}"


def _number(value: float) -> str:
    """A float as Redis and Lua read it back exactly (``repr`` round-trips)."""
    return repr(float(value))


def _ttl_ms(seconds: float) -> str:
    return str(max(1000, math.ceil(seconds * 1000)))


class _Plan:
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
        self.guards += ["below", key, _number(after), str(limit)]

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self.writes += ["set", key, value, "0" if ttl is None else _ttl_ms(ttl), ""]

    def delete(self, key: str) -> None:
        self.writes += ["del", key, "", "", ""]

    def delete_if(self, key: str, value: str) -> None:
        self.writes += ["delif", key, value, "", ""]

    def zadd(self, key: str, score: float, member: str, key_ttl: float | None = None) -> None:
        ttl = "0" if key_ttl is None else _ttl_ms(key_ttl)
        self.writes += ["zadd", key, _number(score), member, ttl]

    def zrem(self, key: str, member: str) -> None:
        self.writes += ["zrem", key, member, "", ""]

    def event(self, type_: str, data: Mapping[str, object], at: float) -> None:
        self.events += [type_, json.dumps(dict(data), separators=(",", ":")), _number(at)]

    def argv(self, op_key: str, keys: _Keys) -> list[str]:
        return [
            op_key,
            keys.seq,
            keys.events,
            str(EVENT_LOG_MAX_EVENTS),
            str(len(self.guards) // 4),
            *self.guards,
            str(len(self.writes) // 5),
            *self.writes,
            str(len(self.events) // 3),
            *self.events,
        ]


# -- records --------------------------------------------------------------------------------------


def _dump(record: Mapping[str, object]) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _device_json(device: Device) -> str:
    return _dump(asdict(device))  # Role is a str enum: it is written as its value


def _request_json(stored: StoredRequest) -> str:
    return _dump(
        {
            **asdict(stored.request),
            "status": stored.status,
            "resolved_at": stored.resolved_at,
            "resolved_by": stored.resolved_by,
        }
    )


def _invite_json(invite: Invite) -> str:
    return _dump(asdict(invite))


def _failure_json(window_start: float, count: int, locked_until: float) -> str:
    return _dump({"window_start": window_start, "count": count, "locked_until": locked_until})


class _Damaged(Exception):
    """A stored record is not what Edge writes."""


def _fields(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise _Damaged("a record is not JSON") from None
    if not isinstance(data, dict):
        raise _Damaged("a record is not a JSON object")
    return data


def _text(data: Mapping[str, Any], name: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if isinstance(value, str) or (optional and value is None):
        return value
    raise _Damaged(f"field {name!r} is {value!r}")


def _time(data: Mapping[str, Any], name: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if optional and value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _Damaged(f"field {name!r} is {value!r}")


def _role(data: Mapping[str, Any]) -> Role:
    role = Role.parse(data.get("role"))
    if role is None:
        raise _Damaged(f"unknown role {data.get('role')!r}")
    return role


def _parse_device(raw: str) -> Device:
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


def _parse_request(raw: str) -> StoredRequest:
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


def _parse_invite(raw: str) -> Invite:
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


def _parse_failure(client: str, raw: str) -> FailureCount:
    data = _fields(raw)
    count = data.get("count")
    if not isinstance(count, int) or isinstance(count, bool):
        raise _Damaged(f"field 'count' is {count!r}")
    return FailureCount(client, _time(data, "window_start"), count, _time(data, "locked_until"))


# -- the store ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisInfo:
    """What ``edge store info`` shows about the Redis server behind the store."""

    version: str
    appendonly: bool
    appendfsync: str
    maxmemory_policy: str
    role: str
    event_log_length: int


class RedisStore:
    """``Store`` on Redis; safe for many threads, processes and replicas at once."""

    def __init__(self, url: str) -> None:
        self.target = parse_redis_url(url)
        self._keys = _Keys(self.target.prefix)
        self._closed = False
        self._client: redis.Redis = redis.Redis(
            retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), self.target.retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            **self.target.connection,
        )
        self._commit_script = self._client.register_script(_COMMIT)
        self._follow_script = self._client.register_script(_FOLLOW)
        self._list_script = self._client.register_script(_LIST)
        self._housekeeping_script = self._client.register_script(_HOUSEKEEPING)
        self._scan_script = self._client.register_script(_SCAN_VALUES)
        self._wait_slice = max(0.05, float(self.target.connection["socket_timeout"]) / 2)
        try:
            self._check_server()
        except BaseException:
            self.close()
            raise

    @property
    def description(self) -> str:
        return self.target.display

    def __repr__(self) -> str:
        return f"RedisStore({self.target.display!r})"

    # -- talking to Redis ---------------------------------------------------------------------

    def _call(self, action: str, command: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError(f"Redis store {self.description} is closed")
        try:
            return command()
        except redis.RedisError as exc:
            raise self._error(action, exc) from None
        except _Damaged as exc:
            raise self._damaged(str(exc)) from None

    def _error(self, action: str, exc: redis.RedisError) -> StoreError:
        where = f"Redis store {self.description}: cannot {action}"
        text = str(exc)
        if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
            hint = "Redis refused the credentials; check the user and password in store.url"
        elif isinstance(exc, redis.BusyLoadingError):
            hint = "Redis is loading its data after a restart; the gateway retries by itself"
        elif isinstance(exc, redis.ConnectionError) and ("SSL" in text or "certificate" in text):
            hint = (
                f"the TLS handshake failed ({text}); check ssl_ca_certs (the CA that signed "
                "Redis's certificate) and that the host name in store.url is in the certificate"
            )
        elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            hint = (
                f"Redis is unreachable ({text or type(exc).__name__}); pairing decisions wait "
                "until it is back and the gateway reconnects by itself: check that Redis runs "
                "and that store.url points at it"
            )
        elif isinstance(exc, redis.ReadOnlyError):
            hint = "it is a read-only replica; point store.url at the primary"
        elif text.startswith("OOM"):
            hint = "Redis is out of memory (maxmemory); give it more or free some"
        elif "equal or smaller than the target stream top item" in text:
            hint = (
                f"the event counter {self._keys.seq} is behind the event stream: keys under "
                f"{self._keys.base}* were changed outside Edge"
            )
        else:
            hint = f"Redis answered: {text}"
        return StoreError(f"{where}; {hint}")

    def _damaged(self, detail: str) -> StoreError:
        return StoreError(
            f"Redis store {self.description} holds a record Edge did not write ({detail}); "
            f"keys under {self._keys.base}* must only be written by Edge: restore them from a "
            "backup or move the store to a new key prefix"
        )

    def _check_server(self) -> None:
        def check() -> tuple[str, Any]:
            info = self._client.info("server")
            state = self._client.eval(_INIT, 0, self._keys.meta, APPLICATION, str(SCHEMA_VERSION))
            return str(info.get("redis_version", "0")), state

        version, (application, schema) = self._call("connect", check)
        if _version_tuple(version) < MIN_REDIS_VERSION:
            raise StoreError(
                f"Redis store {self.description}: Redis {version} is too old; Edge needs "
                f"{'.'.join(map(str, MIN_REDIS_VERSION))} or newer"
            )
        if application != APPLICATION:
            raise StoreError(
                f"Redis store {self.description}: {self._keys.meta} belongs to "
                f"{application!r}, not Edge; choose another key prefix (?prefix=) or database"
            )
        if not str(schema).isdigit() or int(schema) > SCHEMA_VERSION:
            raise StoreError(
                f"Redis store {self.description} was written by a newer Edge (schema {schema}, "
                f"this version knows {SCHEMA_VERSION}); upgrade Edge"
            )

    def _get(self, key: str) -> str | None:
        value = self._client.get(key)
        return None if value is None else str(value)

    def _follow(self, index_key: str, record_prefix: str) -> tuple[str | None, str | None]:
        """The value of an index key and the record it points at (None, None when unset)."""
        reply = self._follow_script(args=[index_key, record_prefix])
        if not reply:
            return None, None
        return str(reply[0]), None if reply[1] is None else str(reply[1])

    def _listing(
        self, zset: str, record_prefix: str, low: str = "", high: str = ""
    ) -> list[tuple[str, str | None]]:
        reply = self._list_script(args=[zset, record_prefix, low, high])
        return [
            (str(reply[n]), None if reply[n + 1] is None else str(reply[n + 1]))
            for n in range(0, len(reply), 2)
        ]

    def _commit(self, plan: _Plan) -> bool:
        op_key = self._keys.op(os.urandom(12).hex())
        reply = self._commit_script(args=plan.argv(op_key, self._keys))
        return str(reply[0]) in {"ok", "replayed"}

    def _transact(self, action: str, step: Callable[[_Plan], T]) -> T:
        """Run ``step`` (read and decide) and commit its plan, again whenever a guard failed."""

        def attempt() -> tuple[bool, T]:
            plan = _Plan()
            result = step(plan)
            return plan.empty or self._commit(plan), result

        for number in range(COMMIT_ATTEMPTS):
            done, result = self._call(action, attempt)
            if done:
                return result
            time.sleep(random.uniform(0, 0.0005 * min(number + 1, 20)))  # jitter
        raise StoreError(
            f"Redis store {self.description}: cannot {action}; the records kept changing under "
            f"it ({COMMIT_ATTEMPTS} attempts), try again"
        )

    def file_problem(self, *, deep: bool) -> str | None:
        return None  # no local file: an unreachable server shows in every call instead

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(redis.RedisError):
            self._client.close()

    # -- shared steps -------------------------------------------------------------------------

    def _read_device(self, device_id: str) -> tuple[Device | None, str | None]:
        raw = self._get(self._keys.device(device_id))
        return (None, None) if raw is None else (_parse_device(raw), raw)

    def _put_device(
        self, plan: _Plan, device: Device, existing: Device | None, raw: str | None
    ) -> None:
        """Write ``device`` in place of what was read, keeping the token index right."""
        keys = self._keys
        plan.expect(keys.device(device.id), raw)
        if existing is not None and existing.token_hash not in (None, device.token_hash):
            plan.delete_if(keys.token(existing.token_hash), device.id)
        if device.token_hash is not None:
            owner = self._get(keys.token(device.token_hash))
            if owner not in (None, device.id):
                raise StoreError(
                    f"Redis store {self.description}: the token hash of device {device.id[:12]} "
                    "is already held by another device; nothing was changed"
                )
            plan.free(keys.token(device.token_hash), device.id)
            plan.set(keys.token(device.token_hash), device.id)
        plan.set(keys.device(device.id), _device_json(device))
        plan.zadd(keys.devices, device.created_at, device.id)

    def _settle(
        self,
        plan: _Plan,
        stored: StoredRequest,
        raw: str,
        decision: str,
        actor: str,
        now: float,
        **extra: object,
    ) -> None:
        keys, request = self._keys, stored.request
        plan.expect(keys.request(request.id), raw)
        settled = StoredRequest(request, decision, now, actor)
        plan.set(keys.request(request.id), _request_json(settled), RESOLVED_RETENTION)
        plan.delete_if(keys.pending_of(request.device_id), request.id)
        plan.zrem(keys.pending, request.id)
        plan.zrem(keys.pending_from(request.client_key), request.id)
        plan.event(
            "pairing.resolved",
            request_event_data(request, decision=decision, actor=actor, **extra),
            now,
        )

    def _pending_of(self, plan: _Plan, device_id: str) -> tuple[StoredRequest, str] | None:
        """The device's pending request (expired or not), guarded in ``plan``."""
        request_id, raw = self._follow(self._keys.pending_of(device_id), self._keys.request_prefix)
        plan.expect(self._keys.pending_of(device_id), request_id)
        if raw is None:
            return None
        stored = _parse_request(raw)
        return (stored, raw) if stored.status == _PENDING else None

    def _settle_pending_of(
        self, plan: _Plan, device_id: str, decision: str, actor: str, now: float
    ) -> None:
        pending = self._pending_of(plan, device_id)
        if pending is not None:
            self._settle(plan, *pending, decision, actor, now)

    # -- devices ------------------------------------------------------------------------------

    def get_device(self, device_id: str) -> Device | None:
        return self._call("read a device", lambda: self._read_device(device_id)[0])

    def device_for_token(self, token_hash: str) -> Device | None:
        def read() -> Device | None:
            _, raw = self._follow(self._keys.token(token_hash), self._keys.device_prefix)
            if raw is None:
                return None
            device = _parse_device(raw)
            return device if device.token_hash == token_hash else None

        return self._call("read a device", read)

    def _all_devices(self) -> list[tuple[Device, str]]:
        return [
            (_parse_device(raw), raw)
            for _, raw in self._listing(self._keys.devices, self._keys.device_prefix)
            if raw is not None
        ]

    def list_devices(self, *, include_revoked: bool = False) -> list[Device]:
        devices = self._call("list devices", self._all_devices)
        return [d for d, _ in devices if include_revoked or d.status == PAIRED]

    def pair_device(self, device: Device, *, actor: str, now: float) -> None:
        def step(plan: _Plan) -> None:
            existing, raw = self._read_device(device.id)
            self._put_device(plan, device, existing, raw)
            plan.event(
                "device.paired",
                device_event_data(
                    device,
                    actor,
                    previous_status=existing.status if existing else None,
                    previous_role=existing.role.value if existing else None,
                ),
                now,
            )
            self._settle_pending_of(plan, device.id, "approved", actor, now)

        self._transact("pair a device", step)

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
        def step(plan: _Plan) -> Device | None:
            device, raw = self._read_device(device_id)
            if device is None or not device.is_paired or device.token_hash != expected_hash:
                return None
            updated = replace(device, token_hash=new_hash)
            self._put_device(plan, updated, device, raw)
            plan.event("device.token_rotated", device_event_data(device, actor, reason=reason), now)
            return updated

        return self._transact("replace a device token", step)

    def revoke_device(self, device_id: str, *, actor: str, now: float) -> Device | None:
        def step(plan: _Plan) -> Device | None:
            device, raw = self._read_device(device_id)
            if device is None or device.status == REVOKED:
                return None
            revoked = replace(device, status=REVOKED, revoked_at=now)
            self._put_device(plan, revoked, device, raw)
            plan.event("device.revoked", device_event_data(device, actor), now)
            self._settle_pending_of(plan, device_id, "rejected", actor, now)
            return revoked

        return self._transact("revoke a device", step)

    def assign_user(
        self, device_id: str, user: str | None, *, actor: str, now: float
    ) -> Device | None:
        def step(plan: _Plan) -> Device | None:
            device, raw = self._read_device(device_id)
            if device is None:
                return None
            assigned = replace(device, user=user)
            self._put_device(plan, assigned, device, raw)
            plan.event(
                "device.user_assigned",
                device_event_data(assigned, actor, previous_user=device.user),
                now,
            )
            return assigned

        return self._transact("assign a user", step)

    def rename_device(self, device_id: str, name: str, *, actor: str, now: float) -> Device | None:
        def step(plan: _Plan) -> Device | None:
            device, raw = self._read_device(device_id)
            if device is None:
                return None
            renamed = replace(device, name=name)
            self._put_device(plan, renamed, device, raw)
            plan.event(
                "device.renamed",
                device_event_data(renamed, actor, previous_name=device.name),
                now,
            )
            return renamed

        return self._transact("rename a device", step)

    def record_seen(self, seen: Mapping[str, Seen]) -> None:
        if not seen:
            return
        ids = list(seen)

        def step(plan: _Plan) -> None:
            raws = self._client.mget([self._keys.device(device_id) for device_id in ids])
            for device_id, raw in zip(ids, raws, strict=True):
                if raw is None:
                    continue
                device, item = _parse_device(str(raw)), seen[device_id]
                updated = replace(
                    device,
                    last_seen_at=max(device.last_seen_at or 0.0, item.at),
                    last_ip=item.ip if item.ip is not None else device.last_ip,
                )
                if updated != device:
                    plan.expect(self._keys.device(device_id), str(raw))
                    plan.set(self._keys.device(device_id), _device_json(updated))

        self._transact("record last-seen times", step)

    def expire_idle_devices(self, idle_before: float, *, now: float) -> list[Device]:
        def step(plan: _Plan) -> list[Device]:
            idle = []
            for device, raw in self._all_devices():
                seen = device.last_seen_at if device.last_seen_at is not None else device.created_at
                if seen >= idle_before:
                    continue
                idle.append(device)
                plan.expect(self._keys.device(device.id), raw)
                plan.delete(self._keys.device(device.id))
                plan.zrem(self._keys.devices, device.id)
                if device.token_hash is not None:
                    plan.delete_if(self._keys.token(device.token_hash), device.id)
                plan.event(
                    "device.expired",
                    device_event_data(device, "sweep", last_seen_at=device.last_seen_at),
                    now,
                )
            return idle

        return self._transact("expire idle devices", step)

    # -- pairing requests ---------------------------------------------------------------------

    def open_request(
        self, candidate: PairingRequest, *, max_pending: int, max_pending_per_client: int
    ) -> PairingRequest | PendingCapHit:
        now = candidate.created_at
        keys = self._keys

        def step(plan: _Plan) -> PairingRequest | PendingCapHit:
            pending = self._pending_of(plan, candidate.device_id)
            if pending is not None:
                existing, raw = pending
                if not existing.request.expired(now):
                    return self._refresh(plan, existing.request, raw, candidate)
                self._settle(plan, existing, raw, "expired", "sweep", now)
            after = "(" + _number(now)
            per_client = int(
                self._client.zcount(keys.pending_from(candidate.client_key), after, "+inf")
            )
            if per_client >= max_pending_per_client:
                return PendingCapHit("max_pending_per_client", max_pending_per_client)
            if int(self._client.zcount(keys.pending, after, "+inf")) >= max_pending:
                return PendingCapHit("max_pending", max_pending)
            plan.below(keys.pending_from(candidate.client_key), now, max_pending_per_client)
            plan.below(keys.pending, now, max_pending)
            request_id = candidate.id
            while self._client.exists(keys.request(request_id)):
                request_id = new_request_id()
            request = replace(candidate, id=request_id)
            plan.expect(keys.request(request_id), None)
            self._write_pending(plan, request, now)
            plan.event(
                "pairing.requested",
                request_event_data(request, expires_at=request.expires_at),
                now,
            )
            return request

        return self._transact("open a pairing request", step)

    def _write_pending(self, plan: _Plan, request: PairingRequest, now: float) -> None:
        """The pending request and its indexes; Redis drops them a day after expiry."""
        keys = self._keys
        ttl = max(0.0, request.expires_at - now) + RESOLVED_RETENTION
        plan.set(keys.request(request.id), _request_json(StoredRequest(request, _PENDING)), ttl)
        plan.set(keys.pending_of(request.device_id), request.id, ttl)
        plan.zadd(keys.pending, request.expires_at, request.id)
        plan.zadd(keys.pending_from(request.client_key), request.expires_at, request.id, ttl)

    def _refresh(
        self, plan: _Plan, existing: PairingRequest, raw: str, candidate: PairingRequest
    ) -> PairingRequest:
        refreshed = replace(candidate, id=existing.id, created_at=existing.created_at)
        plan.expect(self._keys.request(existing.id), raw)
        if existing.client_key != refreshed.client_key:
            plan.zrem(self._keys.pending_from(existing.client_key), existing.id)
        self._write_pending(plan, refreshed, candidate.created_at)
        changed = (existing.role, existing.reason, existing.name) != (
            refreshed.role,
            refreshed.reason,
            refreshed.name,
        )
        if changed:
            plan.event(
                "pairing.requested",
                request_event_data(refreshed, expires_at=refreshed.expires_at, refreshed=True),
                candidate.created_at,
            )
        return refreshed

    def get_request(self, request_id: str) -> PairingRequest | None:
        def read() -> PairingRequest | None:
            raw = self._get(self._keys.request(request_id))
            if raw is None:
                return None
            stored = _parse_request(raw)
            return stored.request if stored.status == _PENDING else None

        return self._call("read a pairing request", read)

    def list_requests(self, now: float) -> list[PairingRequest]:
        def read() -> list[PairingRequest]:
            listing = self._listing(
                self._keys.pending, self._keys.request_prefix, "(" + _number(now), "+inf"
            )
            stored = [_parse_request(raw) for _, raw in listing if raw is not None]
            return [s.request for s in stored if s.status == _PENDING]

        requests = self._call("list pairing requests", read)
        return sorted(requests, key=lambda r: (r.created_at, r.id))

    def resolve_request(
        self,
        request_id: str,
        *,
        approve: bool,
        role: Role | None,
        actor: str,
        now: float,
        user: str | None = None,
    ) -> Resolution:
        def step(plan: _Plan) -> Resolution:
            raw = self._get(self._keys.request(request_id))
            if raw is None:
                return Resolution(ResolveStatus.NOT_FOUND)
            stored = _parse_request(raw)
            request = stored.request
            if stored.status != _PENDING:
                return Resolution(
                    ResolveStatus.ALREADY_RESOLVED,
                    request,
                    decision=stored.status,
                    resolved_by=stored.resolved_by,
                )
            if request.expired(now):
                self._settle(plan, stored, raw, "expired", "sweep", now)
                return Resolution(
                    ResolveStatus.EXPIRED, request, decision="expired", resolved_by="sweep"
                )
            if not approve:
                self._settle(plan, stored, raw, "rejected", actor, now)
                return Resolution(
                    ResolveStatus.RESOLVED, request, decision="rejected", resolved_by=actor
                )
            existing, device_raw = self._read_device(request.device_id)
            granted = approval_role(existing, request.role, role)
            device = approved_device(
                existing,
                device_id=request.device_id,
                public_key=request.public_key,
                name=request.name,
                role=granted,
                approved_by=actor,
                now=now,
                user=user,
            )
            self._put_device(plan, device, existing, device_raw)
            self._settle(plan, stored, raw, "approved", actor, now, granted_role=granted.value)
            return Resolution(
                ResolveStatus.RESOLVED, request, device, decision="approved", resolved_by=actor
            )

        return self._transact("resolve a pairing request", step)

    def expire_requests(self, now: float) -> list[PairingRequest]:
        keys = self._keys

        def step(plan: _Plan) -> list[PairingRequest]:
            expired = []
            for request_id, raw in self._listing(
                keys.pending, keys.request_prefix, "-inf", _number(now)
            ):
                stored = None if raw is None else _parse_request(raw)
                if raw is None or stored is None or stored.status != _PENDING:
                    plan.zrem(keys.pending, request_id)  # settled or gone: a stale entry
                    continue
                expired.append(stored.request)
                self._settle(plan, stored, raw, "expired", "sweep", now)
            return expired

        expired = self._transact("expire pairing requests", step)
        return sorted(expired, key=lambda r: (r.created_at, r.id))

    # -- invites ------------------------------------------------------------------------------

    def add_invite(self, invite: Invite) -> None:
        keys = self._keys

        def step(plan: _Plan) -> None:
            if self._client.exists(keys.invite(invite.id), keys.invite_code(invite.code_hash)):
                raise StoreError(
                    f"Redis store {self.description}: invite {invite.id} or its code already "
                    "exists; nothing was changed"
                )
            ttl = max(0.0, invite.expires_at - invite.created_at) + RESOLVED_RETENTION
            plan.expect(keys.invite(invite.id), None)
            plan.expect(keys.invite_code(invite.code_hash), None)
            plan.set(keys.invite(invite.id), _invite_json(invite), ttl)
            plan.set(keys.invite_code(invite.code_hash), invite.id, ttl)
            plan.zadd(keys.invites, invite.created_at, invite.id)
            plan.event(
                "invite.created", invite_event_data(invite, invite.created_by), invite.created_at
            )

        self._transact("create an invite", step)

    def list_invites(self) -> list[Invite]:
        def read() -> list[Invite]:
            listing = self._listing(self._keys.invites, self._keys.invite_prefix)
            return [_parse_invite(raw) for _, raw in listing if raw is not None]

        return self._call("list invites", read)

    def cancel_invite(self, invite_id: str, *, actor: str, now: float) -> Invite | None:
        keys = self._keys

        def step(plan: _Plan) -> Invite | None:
            raw = self._get(keys.invite(invite_id))
            if raw is None:
                return None
            invite = _parse_invite(raw)
            if invite.used_at is not None:
                return None
            plan.expect(keys.invite(invite_id), raw)
            plan.delete(keys.invite(invite_id))
            plan.delete_if(keys.invite_code(invite.code_hash), invite_id)
            plan.zrem(keys.invites, invite_id)
            plan.event("invite.cancelled", invite_event_data(invite, actor), now)
            return invite

        return self._transact("cancel an invite", step)

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
        keys = self._keys

        def step(plan: _Plan) -> Device | None:
            invite_id, raw = self._follow(keys.invite_code(code_hash), keys.invite_prefix)
            if invite_id is None or raw is None:
                return None
            invite = _parse_invite(raw)
            if invite.code_hash != code_hash or not invite.usable(now):
                return None
            plan.expect(keys.invite(invite.id), raw)
            used = replace(invite, used_at=now, used_by_device=device_id)
            plan.set(keys.invite(invite.id), _invite_json(used), RESOLVED_RETENTION)
            plan.set(keys.invite_code(code_hash), invite.id, RESOLVED_RETENTION)
            existing, device_raw = self._read_device(device_id)
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
            self._put_device(plan, device, existing, device_raw)
            plan.event(
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
            self._settle_pending_of(plan, device_id, "approved", actor, now)
            return device

        return self._transact("redeem an invite", step)

    # -- failed attempts ----------------------------------------------------------------------

    def record_failure(
        self, client: str, *, now: float, window: float, threshold: int, lockout: float
    ) -> float | None:
        key = self._keys.failure(client)

        def step(plan: _Plan) -> float | None:
            raw = self._get(key)
            row = None if raw is None else _parse_failure(client, raw)
            locked_until = row.locked_until if row else 0.0
            if row is None or now - row.window_start >= window:
                window_start, count = now, 1
            else:
                window_start, count = row.window_start, row.count + 1
            started: float | None = None
            if locked_until <= now and count >= threshold:
                started = locked_until = now + lockout
                plan.event(
                    "auth.lockout",
                    {"client": client, "failures": count, "until": started, "lockout": lockout},
                    now,
                )
                window_start, count = now, 0
            plan.expect(key, raw)
            ttl = max(window_start + window, locked_until) - now + FAILURE_GRACE
            plan.set(key, _failure_json(window_start, count, locked_until), ttl)
            return started

        return self._transact("count a failed attempt", step)

    def locked_until(self, client: str) -> float:
        def read() -> float:
            raw = self._get(self._keys.failure(client))
            return 0.0 if raw is None else _parse_failure(client, raw).locked_until

        return self._call("read a lockout", read)

    # -- events -------------------------------------------------------------------------------

    def latest_seq(self) -> int:
        def read() -> int:
            value = self._get(self._keys.seq)
            if value is None:
                return 0
            if not value.isdigit():
                raise _Damaged(f"the event counter is {value!r}")
            return int(value)

        return self._call("read the event log", read)

    def events_after(self, seq: int, limit: int = 500) -> list[Event]:
        limit = max(1, min(int(limit), MAX_EVENTS_PER_READ))
        start = f"{max(0, int(seq)) + 1}-0"

        def read() -> list[Event]:
            entries: Any = self._client.xrange(self._keys.events, start, "+", count=limit)
            return [_parse_event(entry_id, fields) for entry_id, fields in entries]

        return self._call("read the event log", read)

    def wait_events(self, after: int, timeout: float) -> list[Event]:
        """XREAD BLOCK in slices shorter than the socket timeout, up to ``timeout`` seconds.

        A wait that ends empty also checks that the counter has not gone back
        below ``after``: that happens only when Redis lost data (a restart
        without persistence, a failover to a replica that lagged), and the
        events that follow would reuse numbers the caller has already seen and
        never reach it; so it is reported instead of silently followed.
        """
        events = self.events_after(after)
        deadline = time.monotonic() + max(0.0, timeout)
        last = f"{max(0, int(after))}-0"
        while not events:
            remaining = deadline - time.monotonic()
            if self._closed:
                return events
            if remaining <= 0:
                self._check_not_behind(after)
                return events
            block_ms = max(1, int(min(remaining, self._wait_slice) * 1000))

            def read(block_ms: int = block_ms) -> list[Event]:
                reply: Any = self._client.xread(
                    {self._keys.events: last}, count=500, block=block_ms
                )
                streams = reply.items() if isinstance(reply, dict) else (reply or [])
                return [
                    _parse_event(entry_id, fields)
                    for _, entries in streams
                    for entry_id, fields in entries
                ]

            events = self._call("wait for events", read)
        return events

    def _check_not_behind(self, after: int) -> None:
        latest = self.latest_seq()
        if latest < after:
            raise StoreError(
                f"Redis store {self.description}: the event counter went back from {after} to "
                f"{latest}, so Redis lost data (restarted without appendonly, or failed over to "
                "a replica that lagged); restart every gateway so that they follow the new log, "
                "and check which approvals and revocations must be made again"
            )

    # -- upkeep -------------------------------------------------------------------------------

    def counts(self, now: float) -> tuple[int, dict[str, int]]:
        def read() -> tuple[int, dict[str, int]]:
            pending = int(self._client.zcount(self._keys.pending, "(" + _number(now), "+inf"))
            by_role = {role.value: 0 for role in Role}
            for device, _ in self._all_devices():
                if device.status == PAIRED:
                    by_role[device.role.value] += 1
            return pending, by_role

        return self._call("count devices and requests", read)

    def housekeeping(self, now: float) -> None:
        keys = self._keys
        self._call(
            "trim old records",
            lambda: self._housekeeping_script(
                args=[
                    keys.events,
                    str(EVENT_LOG_MAX_EVENTS),
                    _number(now - EVENT_LOG_MAX_AGE),
                    keys.pending,
                    keys.invites,
                    keys.invite_prefix,
                    _number(now - RESOLVED_RETENTION),
                ]
            ),
        )

    # -- migration and inspection -------------------------------------------------------------

    def _scan(self, pattern: str) -> list[tuple[str, str]]:
        reply = self._scan_script(args=[pattern])
        return [(str(reply[n]), str(reply[n + 1])) for n in range(0, len(reply), 2)]

    def export_snapshot(self) -> StoreSnapshot:
        keys = self._keys

        def read() -> StoreSnapshot:
            # One pipeline in a MULTI: a consistent view even while replicas write.
            pipe = self._client.pipeline(transaction=True)
            self._list_script(args=[keys.devices, keys.device_prefix, "", ""], client=pipe)
            self._scan_script(args=[keys.request_prefix + "*"], client=pipe)
            self._list_script(args=[keys.invites, keys.invite_prefix, "", ""], client=pipe)
            self._scan_script(args=[keys.failure_prefix + "*"], client=pipe)
            pipe.get(keys.seq)
            devices, requests, invites, failures, seq = pipe.execute()
            stored = sorted(
                (_parse_request(str(requests[n + 1])) for n in range(0, len(requests), 2)),
                key=lambda s: (s.request.created_at, s.request.id),
            )
            counters = sorted(
                (
                    _parse_failure(
                        str(failures[n])[len(keys.failure_prefix) :], str(failures[n + 1])
                    )
                    for n in range(0, len(failures), 2)
                ),
                key=lambda f: f.client,
            )
            return StoreSnapshot(
                devices=tuple(
                    _parse_device(str(devices[n + 1]))
                    for n in range(0, len(devices), 2)
                    if devices[n + 1] is not None
                ),
                requests=tuple(stored),
                invites=tuple(
                    _parse_invite(str(invites[n + 1]))
                    for n in range(0, len(invites), 2)
                    if invites[n + 1] is not None
                ),
                failures=tuple(counters),
                event_seq=int(seq) if seq is not None else 0,
            )

        return self._call("export the store", read)

    def _held_keys(self) -> list[str]:
        return [
            str(key)
            for key in self._client.scan_iter(match=self._keys.base + "*", count=1000)
            if str(key) != self._keys.meta
        ]

    def import_snapshot(self, snapshot: StoreSnapshot, *, replace: bool = False) -> None:
        keys = self._keys
        now = time.time()

        def write() -> None:
            held = self._held_keys()
            if held and not replace:
                raise StoreError(
                    f"Redis store {self.description} is not empty ({len(held)} keys under "
                    f"{keys.base}*); refusing to import into it (replace its contents "
                    "explicitly, or use another key prefix or database)"
                )
            current = self._get(keys.seq) if held else None
            seq = max(int(current) if current and current.isdigit() else 0, snapshot.event_seq)
            plan = _Plan()  # the writes a commit would make, sent as one MULTI without events
            for device in snapshot.devices:
                if device.token_hash is not None:
                    plan.set(keys.token(device.token_hash), device.id)
                plan.set(keys.device(device.id), _device_json(device))
                plan.zadd(keys.devices, device.created_at, device.id)
            for stored in snapshot.requests:
                if stored.status == _PENDING:
                    self._write_pending(plan, stored.request, now)
                else:
                    end = stored.resolved_at if stored.resolved_at is not None else now
                    ttl = max(0.0, end - now) + RESOLVED_RETENTION
                    plan.set(keys.request(stored.request.id), _request_json(stored), ttl)
            for invite in snapshot.invites:
                end = invite.used_at if invite.used_at is not None else invite.expires_at
                ttl = max(0.0, end - now) + RESOLVED_RETENTION
                plan.set(keys.invite(invite.id), _invite_json(invite), ttl)
                plan.set(keys.invite_code(invite.code_hash), invite.id, ttl)
                plan.zadd(keys.invites, invite.created_at, invite.id)
            for failure in snapshot.failures:
                ttl = max(failure.window_start, failure.locked_until) - now + RESOLVED_RETENTION
                plan.set(
                    keys.failure(failure.client),
                    _failure_json(failure.window_start, failure.count, failure.locked_until),
                    ttl,
                )
            if seq:
                plan.set(keys.seq, str(seq))
            pipe = self._client.pipeline(transaction=True)
            if held:
                pipe.delete(*held)
            for n in range(0, len(plan.writes), 5):
                kind, key, a, b, c = plan.writes[n : n + 5]
                if kind == "set":
                    pipe.set(key, a, px=None if b == "0" else int(b))
                else:  # zadd
                    pipe.zadd(key, {b: float(a)})
                    if c != "0":
                        pipe.pexpire(key, int(c))
            pipe.execute()

        self._call("import a snapshot", write)

    def server_info(self) -> RedisInfo:
        """The Redis settings that decide what an acknowledged write means."""

        def read() -> RedisInfo:
            info = self._client.info()
            try:
                config = self._client.config_get("appendfsync")
            except redis.ResponseError:  # CONFIG may be renamed or forbidden
                config = {}
            return RedisInfo(
                version=str(info.get("redis_version", "?")),
                appendonly=bool(info.get("aof_enabled", 0)),
                appendfsync=str(config.get("appendfsync", "unknown")),
                maxmemory_policy=str(info.get("maxmemory_policy", "unknown")),
                role=str(info.get("role", "unknown")),
                event_log_length=int(self._client.xlen(self._keys.events)),
            )

        return self._call("read the server settings", read)


def _parse_event(entry_id: str, fields: Mapping[str, Any]) -> Event:
    try:
        seq = int(str(entry_id).split("-", 1)[0])
        data = json.loads(fields["data"])
        at = float(fields["at"])
        type_ = str(fields["type"])
    except (KeyError, ValueError, TypeError):
        raise _Damaged(f"event {entry_id} is not an Edge event") from None
    if not isinstance(data, dict):
        raise _Damaged(f"event {entry_id} holds no JSON object")
    return Event(seq=seq, type=type_, data=data, at=at)


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split(".")[:3]:
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)
