"""Webhook notifications: each store event a webhook asks for, POSTed once, signed, retried.

Nothing here runs on a request's path. ``submit`` (called with every batch of
store events, on the event loop) only appends to memory; one sender task
claims the events, signs them and POSTs them with an ``aiohttp`` session
(the client the relays use: one HTTP client stack at run time).
Per webhook the events go out in order. A failed POST is retried with
exponential backoff and jitter (so gateways that failed together do not
retry together), never sooner than the receiver's ``Retry-After``,
``notify.max_attempts`` times in all; while a receiver is down at most
``notify.queue_size`` events wait for it, and older ones are dropped, counted
and logged. Waiting events live in memory only: a restart loses them.

Each attempt's outcome is also written to ``<data_dir>/notify/state.json``
(``edge.notify_state``), which ``edge notify status`` reads from another
process: the last attempt, success and error per webhook, the failures in a
row and the deliveries waiting, summed over every worker.

Each POST is signed twice over: Edge's own ``X-Edge-Signature``, and the
Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,...``) that the ``standardwebhooks`` libraries of many
languages verify, so a receiver needs no code of Edge's.

Once over workers and replicas: every process reads every store event, so a
process sends only the events the store's ``claim`` gives it: with Redis a
``SET NX`` of the event's seq under the store's key prefix, which every
replica shares; with several workers on SQLite the claim file the workers
share; a lone process owns every event.
A claim that cannot be made (Redis unreachable) counts as owned, so an event
may then arrive twice: receivers de-duplicate on ``X-Edge-Event-Id``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from edge import __version__
from edge.config import NotifySettings, WebhookSettings
from edge.gateway.blocking import Blocking
from edge.logs import SignalWarner, is_secret_field
from edge.notify_state import NotifyState, safe_url
from edge.pairing.models import Event
from edge.pairing.store import CLAIM_NOTIFY, Store
from edge.pairing.store.claims import EventClaim
from edge.serialize import event_data_json

logger = logging.getLogger("edge.notify")

TIMESTAMP_HEADER = "X-Edge-Timestamp"
SIGNATURE_HEADER = "X-Edge-Signature"
EVENT_ID_HEADER = "X-Edge-Event-Id"
EVENT_TYPE_HEADER = "X-Edge-Event"
ATTEMPT_HEADER = "X-Edge-Attempt"
SIGNATURE_PREFIX = "sha256="
# Standard Webhooks (standardwebhooks.com): the id, the attempt's time, and "v1,<base64 HMAC>".
STANDARD_ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
STANDARD_SECRET_PREFIX = "whsec_"
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept between X-Edge-Timestamp and its clock
OUTCOMES = ("delivered", "retried", "failed", "dropped")
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
STOP_GRACE = 2.0
_RETRYABLE_4XX = frozenset({408, 425, 429})


# -- the wire format -------------------------------------------------------------------------


def event_id(event: Event) -> str:
    """Stable over processes and retries; the time part keeps ids apart if a store is recreated."""
    return f"evt_{event.seq}_{int(event.at * 1000)}"


def event_body(event: Event, dashboard_url: str | None = None) -> bytes:
    """The JSON a receiver gets: id, type, time (epoch ms) and the event's data, no secret.

    ``dashboard_url`` (``server.public_url``, when set) is where the operator
    reading the message opens the dashboard to act on it; never a loopback
    guess, which would point the receiver's reader at their own machine.
    """
    data = {k: v for k, v in event_data_json(event.data).items() if not is_secret_field(k)}
    payload: dict[str, object] = {
        "id": event_id(event),
        "type": event.type,
        "at": int(event.at * 1000),
        "data": data,
    }
    if dashboard_url is not None:
        payload["dashboardUrl"] = dashboard_url + "/"
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``, the X-Edge-Signature value."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key: the bytes of a ``whsec_<base64>`` secret, else its UTF-8.

    A ``whsec_`` secret is decoded as the standard's libraries decode it
    (padding optional), so the same string configures both ends. Any other
    secret (and a ``whsec_`` one that is not base64) is used as it is, and a
    receiver's library is then given its UTF-8 bytes.
    """
    if secret.startswith(STANDARD_SECRET_PREFIX):
        encoded = secret[len(STANDARD_SECRET_PREFIX) :]
        with contextlib.suppress(binascii.Error, ValueError):
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            if key:
                return key
    return secret.encode()


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, the webhook-signature value."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def backoff_delay(failures: int, base: float, cap: float, rand: float) -> float:
    """Seconds before the next attempt: between half and all of ``base * 2**(failures-1)``.

    The doubling is capped at ``cap``; ``rand`` (0 to 1) picks the point, so
    senders that failed at the same moment spread their retries out.
    """
    full: float = min(cap, base * 2.0 ** min(failures - 1, 30))
    return full / 2 + rand * full / 2


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` (seconds, or an HTTP date) as seconds from ``now``; None when unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # not an HTTP date, which is always GMT
    return max(0.0, when.timestamp() - now)


def verify(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE,
) -> bool:
    """What a receiver does: a fresh timestamp and a matching signature (constant time)."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


# -- claims: which process sends an event ---------------------------------------------------------


class Claim(Protocol):
    def claim(self, seqs: Iterable[int]) -> set[int]:
        """The seqs among ``seqs`` this process must send; each seq goes to one process."""
        ...


@dataclass(frozen=True)
class StoreClaim:
    """The store's own claim for webhooks: it spans every process on the store."""

    store: Store

    def claim(self, seqs: Iterable[int]) -> set[int]:
        return self.store.claim(CLAIM_NOTIFY, seqs)


def claim_for_store(store: Store) -> Claim:
    """The claim that spans every process reading ``store``'s event log."""
    return StoreClaim(store)


# -- the sender ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    event_id: str
    event_type: str
    body: bytes = field(repr=False)


class _Answer(NamedTuple):
    outcome: str  # "delivered" | "retry" | "refused"
    problem: str  # what went wrong, for the log
    retry_after: float | None = None  # seconds the receiver asked to wait


@dataclass(frozen=True)
class NotifyStats:
    delivered: int
    retried: int
    failed: int
    dropped: int
    waiting: int


@dataclass
class _Target:
    """One webhook's queue; ``failures`` in a row set the backoff, ``attempts`` count the head."""

    webhook: WebhookSettings
    queue: deque[Delivery] = field(default_factory=deque)
    attempts: int = 0
    failures: int = 0
    next_at: float = 0.0
    sending: bool = False
    recorded: bool = False  # its delivery state was written to the state file


class Notifier:
    """Queues, claims, signs and POSTs store events to ``notify.webhooks``."""

    def __init__(
        self,
        settings: NotifySettings,
        claim: Claim,
        *,
        registry: CollectorRegistry | None = None,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        clock: Callable[[], float] = time.time,
        blocking: Blocking | None = None,
        state: NotifyState | None = None,
        public_url: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self._public_url = public_url  # read per batch: a reload that sets it applies at once
        self._state = state
        self._claim = claim
        # The claim may be a Redis round trip: it goes through the blocking door.
        self._blocking = blocking or Blocking(1, name="edge-notify")
        self._backoff = (backoff_base, backoff_cap)
        self._clock = clock
        self._targets = [_Target(webhook) for webhook in settings.webhooks]
        self._wanted = frozenset(name for w in settings.webhooks for name in w.events)
        self._intake: deque[Event] = deque()
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._warner = SignalWarner(logger)
        self._counter: Counter | None = None
        if self._targets:
            self._counter = Counter(
                "edge_webhook_deliveries",
                "Webhook deliveries by outcome (delivered, retried, failed, dropped).",
                ["outcome"],
                registry=registry or CollectorRegistry(),
            )
            for outcome in OUTCOMES:
                self._counter.labels(outcome=outcome)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._posts: set[asyncio.Task[None]] = set()
        self._client: aiohttp.ClientSession | None = None

    @classmethod
    def for_store(
        cls,
        settings: NotifySettings,
        store: Store,
        registry: CollectorRegistry | None = None,
        *,
        blocking: Blocking | None = None,
        data_dir: Path | None = None,
        public_url: Callable[[], str | None] = lambda: None,
    ) -> Notifier:
        """The notifier of a gateway process; ``data_dir`` is where it records delivery state."""
        claim: Claim = EventClaim(None) if not settings.webhooks else claim_for_store(store)
        state = NotifyState(data_dir) if data_dir is not None else None
        return cls(
            settings,
            claim,
            registry=registry,
            blocking=blocking,
            state=state,
            public_url=public_url,
        )

    def stats(self) -> NotifyStats:
        waiting = len(self._intake) + sum(len(t.queue) for t in self._targets)
        return NotifyStats(**self._counts, waiting=waiting)

    # -- intake (event loop, never blocks) ------------------------------------------------------

    def submit(self, events: Sequence[Event]) -> None:
        """Take the events some webhook wants; the sender claims and sends them later."""
        wanted = [event for event in events if event.type in self._wanted]
        if not wanted or self._task is None:
            return
        self._intake.extend(wanted)
        limit = self.settings.queue_size
        while len(self._intake) > limit:
            self._intake.popleft()
            self._count("dropped")
            self._warn_dropped("the sender is behind")
        if self._wake is not None:
            self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._targets or self._task is not None:
            return
        self._wake = asyncio.Event()
        self._client = aiohttp.ClientSession(
            headers={"user-agent": f"edge/{__version__}"},
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        self._task = asyncio.create_task(self._run(), name="edge-notify")

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Give due deliveries ``grace`` seconds, then stop; say what was left unsent."""
        if self._task is None:
            return
        deadline = time.monotonic() + grace
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in (self._task, *self._posts):
            task.cancel()
        for task in (self._task, *self._posts):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        self._posts.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None
        left = self.stats().waiting
        if left:
            logger.warning("%d webhook deliveries were not sent before shutdown", left)
        for target in self._targets:
            if target.recorded:
                target.queue.clear()  # what waited in this process's memory ends with it
                await self._record(target, None)

    def _busy(self) -> bool:
        now = time.monotonic()
        return bool(self._intake) or any(
            t.sending or (t.queue and t.next_at <= now) for t in self._targets
        )

    # -- the sender task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._claim_intake()
            now = time.monotonic()
            for target in self._targets:
                if target.queue and not target.sending and target.next_at <= now:
                    target.sending = True
                    task = asyncio.create_task(self._attempt(target))
                    self._posts.add(task)
                    task.add_done_callback(self._posts.discard)
            waits = [t.next_at - now for t in self._targets if t.queue and not t.sending]
            self._wake.clear()
            if self._intake:
                continue
            # asyncio.wait, not wait_for: wait_for may swallow a cancel racing a wake-up (3.11)
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([waiter], timeout=max(0.0, min(waits)) if waits else None)
            finally:
                waiter.cancel()

    async def _claim_intake(self) -> None:
        if not self._intake:
            return
        batch = list(self._intake)
        self._intake.clear()
        try:
            owned = await self._blocking.run(self._claim.claim, [e.seq for e in batch])
        except Exception as exc:
            self._warner.warn(
                "webhook_claim", f"could not claim events for webhooks, sending them anyway: {exc}"
            )
            owned = {event.seq for event in batch}
        dashboard_url = self._public_url()
        for event in batch:
            if event.seq not in owned:
                continue
            delivery = Delivery(event_id(event), event.type, event_body(event, dashboard_url))
            for target in self._targets:
                if event.type in target.webhook.events:
                    self._enqueue(target, delivery)

    def _enqueue(self, target: _Target, delivery: Delivery) -> None:
        if len(target.queue) >= self.settings.queue_size:
            target.queue.popleft()
            target.attempts = 0
            self._count("dropped")
            self._warn_dropped(f"{safe_url(target.webhook.url)} is not accepting events")
        target.queue.append(delivery)

    async def _attempt(self, target: _Target) -> None:
        """One POST of the target's head, its bookkeeping, and the record of it.

        The target stays ``sending`` until its outcome is recorded, so the
        records of one webhook's attempts are written in the order they ran.
        """
        try:
            attempt = await self._settle(target)
            await self._record(target, attempt)
        finally:
            target.sending = False
            if self._wake is not None:
                self._wake.set()

    async def _settle(self, target: _Target) -> tuple[float, str | None]:
        """POST the head and act on the answer: (when it was made, its error or None)."""
        delivery = target.queue[0]
        outcome, problem, retry_after = await self._post(target, delivery, target.attempts + 1)
        attempted_at = time.time()
        error = None if outcome == "delivered" else problem
        if not target.queue or target.queue[0] is not delivery:
            return attempted_at, error  # dropped while in flight: the queue has moved on
        url = safe_url(target.webhook.url)
        if outcome == "delivered":
            target.queue.popleft()
            target.attempts = target.failures = 0
            target.next_at = 0.0
            self._count("delivered")
            return attempted_at, None
        target.attempts += 1
        target.failures += 1
        base, cap = self._backoff
        delay = backoff_delay(target.failures, base, cap, random.random())
        if retry_after is not None:
            # Never sooner than the receiver asked, and never later than the longest backoff.
            delay = max(delay, min(retry_after, cap))
        target.next_at = time.monotonic() + delay
        if outcome == "refused" or target.attempts >= self.settings.max_attempts:
            attempts, target.attempts = target.attempts, 0
            target.queue.popleft()
            self._count("failed")
            logger.warning(
                "webhook %s: gave up on event %s (%s) after %d attempt(s): %s",
                url,
                delivery.event_id,
                delivery.event_type,
                attempts,
                problem,
                extra={"signal": "webhook_failed"},
            )
            return attempted_at, f"{problem}; gave up on event {delivery.event_id}"
        self._count("retried")
        self._warner.warn(
            f"webhook_retry {url}",
            f"webhook {url}: {problem}; retrying with backoff",
            url=url,
        )
        return attempted_at, problem

    async def _post(self, target: _Target, delivery: Delivery, attempt: int) -> _Answer:
        assert self._client is not None
        webhook = target.webhook
        secret = webhook.signing_secret
        timestamp = math.floor(self._clock())
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, delivery.body),
            EVENT_ID_HEADER: delivery.event_id,
            EVENT_TYPE_HEADER: delivery.event_type,
            ATTEMPT_HEADER: str(attempt),
            STANDARD_ID_HEADER: delivery.event_id,
            STANDARD_TIMESTAMP_HEADER: str(timestamp),
            STANDARD_SIGNATURE_HEADER: sign_standard(
                secret, delivery.event_id, timestamp, delivery.body
            ),
        }
        try:
            # The body is never read: only the status matters, whatever the receiver sends.
            async with self._client.post(
                webhook.url,
                data=delivery.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=webhook.timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("retry-after"), time.time())
        except TimeoutError:
            return _Answer(
                "retry", f"no answer within {webhook.timeout:g} s (notify.webhooks[].timeout)"
            )
        except aiohttp.ClientError as exc:
            return _Answer("retry", f"cannot reach it ({type(exc).__name__}: {exc})")
        if 200 <= status < 300:
            return _Answer("delivered", "")
        if 300 <= status < 400:
            return _Answer(
                "refused", f"answered {status}, a redirect; webhooks are never redirected"
            )
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            return _Answer("refused", f"answered {status} (check the URL and the shared secret)")
        waited = f", asked to wait {retry_after:g} s" if retry_after is not None else ""
        return _Answer("retry", f"answered {status}{waited}", retry_after)

    async def _record(self, target: _Target, attempt: tuple[float, str | None] | None) -> None:
        """Write one attempt (its time and error, None if delivered) and the queue after it.

        ``attempt`` None records only the queue (at shutdown: empty). The file
        is shared with the other workers, so the write goes through the
        blocking door; a write that fails costs the status report, never a
        delivery.
        """
        state = self._state
        if state is None:
            return
        target.recorded = True
        url = target.webhook.url
        pending = len(target.queue)
        next_at = time.time() + max(0.0, target.next_at - time.monotonic()) if pending else None
        try:
            if attempt is None:
                await self._blocking.run(
                    state.record_queue, url, pending=pending, next_attempt_at=next_at
                )
            else:
                at, error = attempt
                await self._blocking.run(
                    state.record_attempt,
                    url,
                    at=at,
                    error=error,
                    pending=pending,
                    next_attempt_at=next_at,
                )
        except (OSError, RuntimeError) as exc:  # RuntimeError: a blocking pool already closed
            self._warner.warn(
                "webhook_state", f"cannot record webhook delivery state in {state.path}: {exc}"
            )

    def _count(self, outcome: str) -> None:
        self._counts[outcome] += 1
        if self._counter is not None:
            self._counter.labels(outcome=outcome).inc()

    def _warn_dropped(self, why: str) -> None:
        self._warner.warn(
            "webhook_dropped",
            f"webhook queue full ({self.settings.queue_size} events, notify.queue_size): "
            f"dropped the oldest event because {why}",
        )
