"""The Redis backend: one Redis shared by every replica of the gateway.

Keys and records are laid out as ``redis_records`` says. How a ledger step
stays atomic: the step reads what it needs and decides in Python, and its
``RedisTx`` hands the result to one Lua script (``lua/commit.lua``) as a plan:
guards (the records read are unchanged, a cap still has room), events and
writes. The script checks the guards, appends the events (INCR the counter,
XADD with id ``<seq>-0`` and ``MAXLEN ~``) and applies the writes as one step;
Redis runs nothing in between, and the AOF and replicas receive it as one
transaction. A guard that no longer holds means another replica got there
first: the step runs again on fresh reads, so two approvals of one request
give exactly one RESOLVED. Each plan carries an id the script remembers for a
minute, so a plan re-sent after a lost reply (redis-py retries) is not
applied twice.

Expiry is decided by comparing the caller's clock with ``expires_at``, as in
SQLite, because expiring a request writes an event. Redis's own TTLs (from
the ledger's ``keep_until``) remove what is no longer needed (settled
requests, used invites, old counters) even when no gateway runs.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from edge.pairing.models import Event
from edge.pairing.store.base import (
    EVENT_LOG_MAX_AGE,
    EVENT_LOG_MAX_EVENTS,
    INSTANCE_CLAIMS,
    PENDING,
    RESOLVED_RETENTION,
    BackendInfo,
    RedisInfo,
    StoreError,
    StoreSnapshot,
)
from edge.pairing.store.claims import InstanceClaims
from edge.pairing.store.ledger import Ledger, pending_keep_until
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
from edge.pairing.store.redis_tx import RedisReader, RedisTx, pending_writes
from edge.pairing.store.urls import RedisTarget, parse_redis_url

__all__ = ["RedisBackend", "RedisInfo", "RedisStore", "parse_redis_url"]

SCHEMA_VERSION = 1
APPLICATION = "edge"
MIN_REDIS_VERSION = (6, 2)  # XTRIM MINID and exclusive XRANGE bounds
COMMIT_ATTEMPTS = 64
SCRIPTS = (
    "commit.lua",
    "follow.lua",
    "list.lua",
    "init.lua",
    "housekeeping.lua",
    "scan_values.lua",
)
T = TypeVar("T")


def lua(name: str) -> str:
    """The source of one of the backend's scripts (package data in ``lua/``)."""
    return resources.files("edge.pairing.store").joinpath("lua", name).read_text("utf-8")


class RedisBackend:
    """``Backend`` on Redis; safe for many threads, processes and replicas at once."""

    def __init__(self, url: str) -> None:
        self.target = parse_redis_url(url)
        self._keys = Keys(self.target.prefix)
        self._closed = False
        self._claims = InstanceClaims()
        self._client: redis.Redis = redis.Redis(
            retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), self.target.retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            **self.target.connection,
        )
        self._scripts = {name: self._client.register_script(lua(name)) for name in SCRIPTS}
        self._commit_script = self._scripts["commit.lua"]
        self._wait_slice = max(0.05, float(self.target.connection["socket_timeout"]) / 2)
        try:
            self._check_server()
        except BaseException:
            self.close()
            raise

    @property
    def description(self) -> str:
        return self.target.display

    @property
    def name(self) -> str:
        return f"Redis store {self.description}"

    # -- talking to Redis ---------------------------------------------------------------------

    def _call(self, action: str, command: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError(f"Redis store {self.description} is closed")
        try:
            return command()
        except redis.RedisError as exc:
            raise self._error(action, exc) from None
        except Damaged as exc:
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
            state = self._scripts["init.lua"](
                args=[self._keys.meta, APPLICATION, str(SCHEMA_VERSION)]
            )
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

    def read(self, action: str, step: Callable[[RedisReader], T]) -> T:
        return self._call(
            action, lambda: step(RedisReader(self._client, self._keys, self._scripts))
        )

    def _commit(self, plan: Plan) -> bool:
        op_key = self._keys.op(os.urandom(12).hex())
        reply = self._commit_script(args=plan.argv(op_key, self._keys))
        return str(reply[0]) in {"ok", "replayed"}

    def transact(self, action: str, now: float, step: Callable[[RedisTx], T]) -> T:
        """Run ``step`` and commit its plan, again on fresh reads whenever a guard failed."""

        def attempt() -> tuple[bool, T]:
            tx = RedisTx(self._client, self._keys, self._scripts, now=now, name=self.name)
            result = step(tx)
            return tx.plan.empty or self._commit(tx.plan), result

        for number_ in range(COMMIT_ATTEMPTS):
            done, result = self._call(action, attempt)
            if done:
                return result
            time.sleep(random.uniform(0, 0.0005 * min(number_ + 1, 20)))  # jitter
        raise StoreError(
            f"Redis store {self.description}: cannot {action}; the records kept changing under "
            f"it ({COMMIT_ATTEMPTS} attempts), try again"
        )

    def wait_events(self, after: int, timeout: float) -> list[Event]:
        """XREAD BLOCK in slices shorter than the socket timeout, up to ``timeout`` seconds.

        A wait that ends empty also checks that the counter has not gone back
        below ``after``: that happens only when Redis lost data (a restart
        without persistence, a failover to a replica that lagged), and the
        events that follow would reuse numbers the caller has already seen and
        never reach it; so it is reported instead of silently followed.
        """
        events = self.read("read the event log", lambda r: r.events_after(int(after), 500))
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
                    parse_event(entry_id, fields)
                    for _, entries in streams
                    for entry_id, fields in entries
                ]

            events = self._call("wait for events", read)
        return events

    def _check_not_behind(self, after: int) -> None:
        latest = self.read("read the event log", lambda r: r.latest_seq())
        if latest < after:
            raise StoreError(
                f"Redis store {self.description}: the event counter went back from {after} to "
                f"{latest}, so Redis lost data (restarted without appendonly, or failed over to "
                "a replica that lagged); restart every gateway so that they follow the new log, "
                "and check which approvals and revocations must be made again"
            )

    def claim(self, purpose: str, seqs: Iterable[int]) -> set[int]:
        """One ``SET NX`` per event under the prefix for purposes that span replicas.

        The keys outlive the event log. Purposes of one instance (the audit
        line and metrics of each replica) are claimed among its own workers.
        """
        if purpose in INSTANCE_CLAIMS:
            return self._claims.claim(purpose, seqs)
        ordered = sorted(set(seqs))
        if not ordered:
            return set()

        def claim() -> set[int]:
            pipe = self._client.pipeline(transaction=False)
            for seq in ordered:
                key = self._keys.claim(purpose, seq)
                pipe.set(key, os.getpid(), nx=True, ex=int(EVENT_LOG_MAX_AGE))
            return {seq for seq, won in zip(ordered, pipe.execute(), strict=True) if won}

        return self._call("claim events", claim)

    def housekeeping(self, now: float) -> None:
        keys = self._keys
        self._call(
            "trim old records",
            lambda: self._scripts["housekeeping.lua"](
                args=[
                    keys.events,
                    str(EVENT_LOG_MAX_EVENTS),
                    number(now - EVENT_LOG_MAX_AGE),
                    keys.pending,
                    keys.invites,
                    keys.invite_prefix,
                    number(now - RESOLVED_RETENTION),
                ]
            ),
        )

    def file_problem(self, *, deep: bool) -> str | None:
        return None  # no local file: an unreachable server shows in every call instead

    def about(self) -> BackendInfo:
        return BackendInfo(kind="redis", schema=SCHEMA_VERSION, server=self.server_info())

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(redis.RedisError):
            self._client.close()

    # -- migration and inspection -------------------------------------------------------------

    def export_snapshot(self) -> StoreSnapshot:
        keys = self._keys

        def read() -> StoreSnapshot:
            # One pipeline in a MULTI: a consistent view even while replicas write.
            pipe = self._client.pipeline(transaction=True)
            self._scripts["list.lua"](args=[keys.devices, keys.device_prefix, "", ""], client=pipe)
            self._scripts["scan_values.lua"](args=[keys.request_prefix + "*"], client=pipe)
            self._scripts["list.lua"](args=[keys.invites, keys.invite_prefix, "", ""], client=pipe)
            self._scripts["scan_values.lua"](args=[keys.failure_prefix + "*"], client=pipe)
            pipe.get(keys.seq)
            devices, requests, invites, failures, seq = pipe.execute()
            stored = sorted(
                (parse_request(str(requests[n + 1])) for n in range(0, len(requests), 2)),
                key=lambda s: (s.request.created_at, s.request.id),
            )
            counters = sorted(
                (
                    parse_failure(
                        str(failures[n])[len(keys.failure_prefix) :], str(failures[n + 1])
                    )
                    for n in range(0, len(failures), 2)
                ),
                key=lambda f: f.client,
            )
            return StoreSnapshot(
                devices=tuple(
                    parse_device(str(devices[n + 1]))
                    for n in range(0, len(devices), 2)
                    if devices[n + 1] is not None
                ),
                requests=tuple(stored),
                invites=tuple(
                    parse_invite(str(invites[n + 1]))
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
        """One MULTI of plain writes: there is nothing to guard in a store that is emptied first."""
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
            current = self._client.get(keys.seq) if held else None
            text = "" if current is None else str(current)
            seq = max(int(text) if text.isdigit() else 0, snapshot.event_seq)
            plan = Plan()  # the writes a commit would make, sent as one MULTI without events
            for device in snapshot.devices:
                if device.token_hash is not None:
                    plan.set(keys.token(device.token_hash), device.id)
                plan.set(keys.device(device.id), device_json(device))
                plan.zadd(keys.devices, device.created_at, device.id)
            for stored in snapshot.requests:
                if stored.status == PENDING:
                    keep = pending_keep_until(stored.request, now)
                    pending_writes(plan, keys, stored.request, max(0.0, keep - now))
                else:
                    end = stored.resolved_at if stored.resolved_at is not None else now
                    ttl = max(0.0, end - now) + RESOLVED_RETENTION
                    plan.set(keys.request(stored.request.id), request_json(stored), ttl)
            for invite in snapshot.invites:
                end = invite.used_at if invite.used_at is not None else invite.expires_at
                ttl = max(0.0, end - now) + RESOLVED_RETENTION
                plan.set(keys.invite(invite.id), invite_json(invite), ttl)
                plan.set(keys.invite_code(invite.code_hash), invite.id, ttl)
                plan.zadd(keys.invites, invite.created_at, invite.id)
            for failure in snapshot.failures:
                ttl = max(failure.window_start, failure.locked_until) - now + RESOLVED_RETENTION
                plan.set(
                    keys.failure(failure.client),
                    failure_json(failure.window_start, failure.count, failure.locked_until),
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


class RedisStore(Ledger):
    """The pairing ``Store`` on Redis."""

    backend: RedisBackend

    def __init__(self, url: str) -> None:
        super().__init__(RedisBackend(url))

    @property
    def target(self) -> RedisTarget:
        return self.backend.target

    def server_info(self) -> RedisInfo:
        return self.backend.server_info()


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split(".")[:3]:
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)
