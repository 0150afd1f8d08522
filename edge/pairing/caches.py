"""The service's memory of the store on the hot path, all of it safe to lose.

``TokenCache`` answers "which device holds this token hash" and
``LockoutCache`` "is this address locked out" without a store read on most
requests; ``Touches`` batches last-seen times for one write. Changes made by
this process update them at once; changes made elsewhere (other workers,
replicas, the CLI) arrive as store events (``PairingService.apply_events``),
and cached devices are re-read after ``TOKEN_CACHE_TTL`` seconds in any case.
While the store is unreachable (Redis down), a device token verified within
the last ``STORE_OUTAGE_GRACE`` seconds keeps working and known lockouts
still apply.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from edge.pairing.models import Device
from edge.pairing.store import Seen, StoreError

TOKEN_CACHE_SIZE = 4096
TOKEN_CACHE_TTL = 30.0
STORE_OUTAGE_GRACE = 120.0  # how long a verified token outlives an unreachable store
LOCKOUT_CACHE_SIZE = 65_536
LOCKOUT_RECHECK = 1.0
TOUCH_RESOLUTION = 1.0  # seconds: last_seen_at is kept to about this precision
# A device's last-seen time reaches the store at most this often (sooner when its address
# changes), however busy it is; between writes, ``Touches.latest`` answers from memory.
TOUCH_WRITE_INTERVAL = 60.0


class Epoch:
    """A count that moves whenever a cached answer may have changed.

    The token cache moves it when it forgets a device or re-reads one that
    changed, the lockout cache when a lockout starts or grows. Anything that
    keeps a decision made from these caches (the gateway's per-connection
    memo) keeps the count it saw and drops the decision once it moved.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class TokenCache:
    """Device by token hash, re-read after ``TOKEN_CACHE_TTL``; forgotten on any change.

    Beside it, the same entries by the token as presented (``presented``): a
    request that shows a token seen within the TTL is answered by one
    dictionary read, without hashing it. Those entries are copied from the
    hash entries (same device, same time, so the same expiry), dropped with
    them by ``forget``, and bounded by the same size. They hold tokens that
    clients keep sending anyway, for at most ``TOKEN_CACHE_TTL`` seconds.
    """

    def __init__(self, epoch: Epoch | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Device, float]] = OrderedDict()
        self._presented: dict[str, tuple[Device, float]] = {}
        # Moved whenever a device is forgotten: a store read that raced with a revocation
        # must not put the device back into either map afterwards.
        self._epoch = epoch if epoch is not None else Epoch()

    def lookup(self, token_hash: str, read: Callable[[str], Device | None]) -> Device | None:
        """The device holding ``token_hash``, from memory or from ``read`` (the store)."""
        now = time.monotonic()
        # Read without the lock (one dict read is atomic; writers take it). Hits do not
        # reorder the cache: an entry is re-inserted at the end whenever it is re-read
        # (at least every TOKEN_CACHE_TTL), so evicting the oldest insertion costs at most
        # one early store read.
        cached = self._entries.get(token_hash)
        if cached is not None and now - cached[1] < TOKEN_CACHE_TTL:
            return cached[0]
        epoch = self._epoch.value
        try:
            device = read(token_hash)
        except StoreError:
            if cached is not None and now - cached[1] < STORE_OUTAGE_GRACE:
                return cached[0]  # verified shortly before the store went away
            raise
        if device is None:
            return None
        with self._lock:
            if epoch != self._epoch.value:
                return device  # a device changed meanwhile: answer, but cache nothing stale
            if cached is not None and cached[0] != device:
                self._epoch.value += 1  # changed elsewhere, unannounced: decisions made go
            self._entries[token_hash] = (device, now)
            self._entries.move_to_end(token_hash)
            while len(self._entries) > TOKEN_CACHE_SIZE:
                self._entries.popitem(last=False)
        return device

    def fresh(self, token_hash: str, presented: str | None = None) -> Device | None:
        """The cached device holding ``token_hash`` if read within ``TOKEN_CACHE_TTL``; no I/O.

        With ``presented`` (the token that hashes to ``token_hash``), a hit is
        also remembered under it for ``fresh_presented``.
        """
        epoch = self._epoch.value
        cached = self._entries.get(token_hash)  # one dict read is atomic; writers take the lock
        if cached is None or time.monotonic() - cached[1] >= TOKEN_CACHE_TTL:
            return None
        if presented is not None:
            with self._lock:
                if epoch == self._epoch.value:  # not forgotten since it was read
                    if len(self._presented) >= TOKEN_CACHE_SIZE:
                        del self._presented[next(iter(self._presented))]
                    self._presented[presented] = cached
        return cached[0]

    def fresh_presented(self, token: str) -> Device | None:
        """``fresh`` by the token itself, without hashing it: None when not remembered so."""
        cached = self._presented.get(token)  # one dict read is atomic; writers take the lock
        if cached is None or time.monotonic() - cached[1] >= TOKEN_CACHE_TTL:
            return None
        return cached[0]

    def forget(self, device_id: str) -> None:
        with self._lock:
            self._epoch.value += 1
            stale = [h for h, (d, _) in self._entries.items() if d.id == device_id]
            for token_hash in stale:
                del self._entries[token_hash]
            shown = [t for t, (d, _) in self._presented.items() if d.id == device_id]
            for token in shown:
                del self._presented[token]


class LockoutCache:
    """Lockout ends per client key, asked of the store at most once per ``LOCKOUT_RECHECK``."""

    def __init__(self, clock: Callable[[], float], epoch: Epoch | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, float]] = {}  # key -> (until, checked at)
        self._epoch = epoch if epoch is not None else Epoch()

    def remaining(self, client_key: str, read: Callable[[str], float]) -> float:
        """Seconds until ``client_key`` may try again (0.0: not locked out)."""
        now = self._clock()
        cached = self._entries.get(client_key)  # one dict read is atomic; writers take the lock
        known = self._judge(cached)
        if known is not None and not known[1]:
            return known[0]
        try:
            until = read(client_key)
        except StoreError:  # the store is down: what this process last knew still holds
            return max(0.0, cached[0] - now) if cached is not None else 0.0
        self.remember(client_key, until)
        return max(0.0, until - now)

    def known(self, client_key: str) -> tuple[float, bool] | None:
        """``(remaining, recheck_due)`` from memory alone, or None when nothing is cached."""
        return self._judge(self._entries.get(client_key))

    def _judge(self, cached: tuple[float, float] | None) -> tuple[float, bool] | None:
        if cached is None:
            return None
        until, checked_at = cached
        remaining = until - self._clock()
        if remaining > 0:
            return remaining, False
        return 0.0, time.monotonic() - checked_at >= LOCKOUT_RECHECK

    def remember(self, client_key: str, until: float) -> None:
        checked_at = time.monotonic()
        with self._lock:
            if len(self._entries) >= LOCKOUT_CACHE_SIZE:
                self._prune()
                if len(self._entries) >= LOCKOUT_CACHE_SIZE:
                    self._entries.clear()  # only a cache: the store still has them
            previous = self._entries.get(client_key, (0.0, 0.0))[0]
            if until > previous and until > self._clock():
                self._epoch.value += 1  # a lockout starts or grows (a recheck finding none: not)
            self._entries[client_key] = (max(until, previous), checked_at)

    def lift(self, client_key: str) -> None:
        """An operator ended ``client_key``'s lockout: not locked, re-read after the recheck."""
        with self._lock:
            self._entries[client_key] = (0.0, time.monotonic())

    def prune(self) -> None:
        with self._lock:
            self._prune()

    def _prune(self) -> None:
        """Drop ended lockouts whose recheck is due (the caller holds the lock)."""
        now, fresh = self._clock(), time.monotonic() - LOCKOUT_RECHECK
        self._entries = {
            key: (until, checked_at)
            for key, (until, checked_at) in self._entries.items()
            if until > now or checked_at > fresh
        }


class Touches:
    """Last-seen times noted in memory, written to the store in batches by ``flush``.

    A device is written when this process has not written it yet, when its
    address changed, or ``TOUCH_WRITE_INTERVAL`` after its last write: a
    device in constant use costs one store write a minute, not one per
    request. ``latest`` is what this process saw, written or not, so a
    listing from here is current to the second.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, Seen] = {}
        self._written: dict[str, Seen] = {}

    def touch(self, device_id: str, client_ip: str | None) -> None:
        now = self._clock()
        previous = self._pending.get(device_id)  # one dict read is atomic; writers take the lock
        if (
            previous is not None
            and (client_ip is None or client_ip == previous.ip)
            and 0 <= now - previous.at < TOUCH_RESOLUTION
        ):
            return  # noted within the last second from the same address: nothing new
        with self._lock:
            previous = self._pending.get(device_id) or self._written.get(device_id)
            ip = client_ip if client_ip is not None else (previous.ip if previous else None)
            self._pending[device_id] = Seen(now, ip)

    def _due(self, device_id: str, seen: Seen, now: float) -> bool:
        written = self._written.get(device_id)
        return written is None or written.ip != seen.ip or now - written.at >= TOUCH_WRITE_INTERVAL

    def noted_at(self, device_id: str) -> float | None:
        """When ``device_id`` was last noted and not yet written; a later note within
        ``TOUCH_RESOLUTION`` of it from the same address would add nothing."""
        pending = self._pending.get(device_id)  # one dict read is atomic; writers take the lock
        return pending.at if pending is not None else None

    def flush(self, write: Callable[[Mapping[str, Seen]], None]) -> None:
        """Hand what is due to ``write``; kept for the next try if it fails."""
        now = self._clock()
        with self._lock:
            batch = {d: s for d, s in self._pending.items() if self._due(d, s, now)}
            for device_id in batch:
                del self._pending[device_id]
        if not batch:
            return
        try:
            write(batch)
        except Exception:
            with self._lock:
                for device_id, seen in batch.items():
                    self._pending.setdefault(device_id, seen)
            raise
        with self._lock:
            if len(self._written) >= TOKEN_CACHE_SIZE * 4:
                self._written.clear()  # only a throttle: the worst is one early write each
            self._written.update(batch)

    def latest(self) -> dict[str, Seen]:
        """The last time and address this process saw each device, written or not."""
        with self._lock:
            return {**self._written, **self._pending}
