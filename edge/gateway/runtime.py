"""The gateway's live state: settings, resolver policy, pairing service, metrics, sockets.

One ``Gateway`` per app. Everything that can change at run time (trusted
proxies, origins, the gateway token) is swapped here by ``reload`` in one
assignment, so a request sees either the old or the new configuration, never
a mixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge import __version__
from edge.config import ConfigError, Settings, load_settings
from edge.datadir import permission_problems
from edge.gateway.notify import Notifier
from edge.gateway.sockets import SocketHub
from edge.gateway.workers import register_worker, unregister_worker
from edge.gateway_token import GatewayTokenError, load_gateway_token
from edge.hostcheck import running_reverse_proxies, same_host_proxy_advice
from edge.logs import SignalWarner, audit_event, setup_logging
from edge.metrics import Metrics, changes_pairing_state, mark_worker_dead
from edge.net import NetworkSet, ResolverPolicy
from edge.pairing.models import Event
from edge.pairing.service import PairingPolicy, PairingService, RateLimitPolicy
from edge.pairing.store import CLAIM_AUDIT, Store, open_store
from edge.peercred import LOOKUPS, peer_check_summary

logger = logging.getLogger("edge.gateway")

SWEEP_INTERVAL = 5.0
STORE_FILE_CHECK = 2.0  # seconds between stats of the store's file
QUICK_CHECK_EVERY = 30  # file checks per PRAGMA quick_check (about a minute)
EVENT_WAIT = 0.25
STORE_RETRY_CAP = 1.0  # seconds between retries while the store is down: /readyz recovers fast
# Where metrics are served is bound at start (routes, the guard, the listener socket).
METRICS_FIXED_AT_START = {"enabled", "path", "host", "port"}


def build_policy(settings: Settings) -> ResolverPolicy:
    return ResolverPolicy(
        trusted_proxies=NetworkSet.parse(settings.proxy.trusted_proxies),
        client_ip_headers=tuple(settings.proxy.client_ip_headers),
        local_loopback=settings.local.loopback,
        local_networks=NetworkSet.parse(settings.local.networks, allow_unix_word=False),
        local_hosts=frozenset(settings.local.hosts),
        peer_check=settings.local.peer_check,
        allowed_origins=frozenset(settings.auth.allowed_origins),
    )


def build_pairing_policy(settings: Settings) -> PairingPolicy:
    rate = settings.auth.rate_limit
    return PairingPolicy(
        request_ttl=settings.pairing.request_ttl,
        max_pending=settings.pairing.max_pending,
        max_pending_per_client=settings.pairing.max_pending_per_client,
        device_idle_expiry=settings.pairing.device_idle_expiry,
        rate_limit=RateLimitPolicy(rate.failures, rate.window, rate.lockout, rate.ipv6_prefix),
    )


@dataclass(frozen=True)
class LiveConfig:
    """The parts of the configuration a reload may change, swapped as one value."""

    settings: Settings
    policy: ResolverPolicy
    allowed_origins: frozenset[str]
    metrics_networks: NetworkSet


def live_config(settings: Settings) -> LiveConfig:
    policy = build_policy(settings)
    return LiveConfig(
        settings=settings,
        policy=policy,
        allowed_origins=policy.allowed_origins,
        metrics_networks=NetworkSet.parse(settings.metrics.allowed_networks, allow_unix_word=False),
    )


class Gateway:
    def __init__(self, settings: Settings, *, store: Store | None = None) -> None:
        setup_logging(settings.logging)
        self.live = live_config(settings)
        token = load_gateway_token(settings, create=True)
        self.store = store or open_store(settings.store.url, settings.data_dir)
        self.service = PairingService(self.store, token.value, build_pairing_policy(settings))
        self.metrics = Metrics(__version__)
        self.hub = SocketHub(self)
        self.notifier = Notifier.for_store(settings.notify, self.store, self.metrics.registry)
        self.warner = SignalWarner(logging.getLogger("edge.proxy"))
        self.started_at = time.time()
        self._stop = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: threading.Thread | None = None
        self._event_seq = self.service.latest_seq()
        self.store_healthy = True
        # Set once the store's file is lost or damaged under us; /readyz stays 503 until restart.
        self.store_problem: str | None = None
        self._store_problem_lock = threading.Lock()
        self._worker_file: Path | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._unobserve_lookups: Callable[[], None] = lambda: None

    @property
    def settings(self) -> Settings:
        return self.live.settings

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        local = self.settings.local
        # Under local.peer_check: uid a same-host proxy's visitors are never local (its
        # connections are its own user's), so only the address-only rule needs the warning.
        proxies = (
            running_reverse_proxies() if local.loopback and local.peer_check == "address" else []
        )
        if proxies:
            logger.warning(same_host_proxy_advice(proxies), extra={"signal": "same_host_proxy"})
        if self.settings.local.loopback:
            logger.info(peer_check_summary(self.settings.local.peer_check))
        self._unobserve_lookups = LOOKUPS.observe(self.metrics.peer_lookup)
        loop = asyncio.get_running_loop()
        self._stop.clear()
        self._worker_file = register_worker(self.settings)
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            # only possible in the main thread (uvicorn); the test client runs elsewhere
            loop.add_signal_handler(signal.SIGHUP, self._reload_from_signal)
        self._watcher = threading.Thread(
            target=self._watch_events, args=(loop,), name="edge-events", daemon=True
        )
        self._watcher.start()
        with contextlib.suppress(Exception):  # the store may be down; housekeeping retries
            await asyncio.to_thread(self._refresh_pairing_gauges)
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        self._tasks.append(asyncio.create_task(self._watch_store_file()))
        await self.notifier.start()

    async def stop(self) -> None:
        self._stop.set()
        self._unobserve_lookups()
        if self._worker_file is not None:
            unregister_worker(self._worker_file)
        mark_worker_dead(os.getpid())
        await self.hub.shutdown()
        await self.notifier.stop()
        for close in self._closers:
            with contextlib.suppress(Exception):  # one failing close must not keep the rest open
                await close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join, 2.0)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.service.flush_touches)
        # The store stays open: every write is already durable, and an app may be
        # started again (the test client runs the lifespan once per session).

    def on_stop(self, close: Callable[[], Awaitable[None]]) -> None:
        """Have ``stop`` await ``close``: pooled clients bound to the event loop that ends."""
        self._closers.append(close)

    def _reload_from_signal(self) -> None:
        try:
            self.reload()
        except (ConfigError, GatewayTokenError) as exc:
            logger.error("reload refused, keeping the running configuration: %s", exc)

    def reload(self) -> list[str]:
        """Re-read the configuration file: trusted proxies, origins, local rules, token.

        Returns what changed. A bad file leaves the running configuration as it
        was and raises ``ConfigError``.
        """
        if self.settings.source is None:
            raise ConfigError(["nothing to reload: this gateway was not started from a file"])
        settings = load_settings(self.settings.source)
        live = live_config(settings)
        problems = permission_problems(settings)
        if problems:
            # A token file someone else could write is no secret of this gateway's.
            raise GatewayTokenError("; ".join(problem.line() for problem in problems))
        token = load_gateway_token(settings, create=False)
        changed = [
            name
            for name, old, new in (
                ("proxy", self.settings.proxy, settings.proxy),
                ("local", self.settings.local, settings.local),
                (
                    "auth.allowed_origins",
                    self.settings.auth.allowed_origins,
                    settings.auth.allowed_origins,
                ),
                ("metrics", self.settings.metrics, settings.metrics),
                ("logging", self.settings.logging, settings.logging),
            )
            if old != new
        ]
        fixed = METRICS_FIXED_AT_START
        if self.settings.metrics.model_dump(include=fixed) != settings.metrics.model_dump(
            include=fixed
        ):
            logger.warning(
                "metrics.enabled, metrics.path, metrics.host and metrics.port take effect at the "
                "next start of edge serve; until then metrics stay where they are"
            )
        if not self.service.check_gateway_token(token.value):
            changed.append("gateway token")
        self.service.set_gateway_token(token.value)
        setup_logging(settings.logging)
        self.live = live
        logger.info("configuration reloaded", extra={"changed": ",".join(changed) or "nothing"})
        return changed

    # -- background work -------------------------------------------------------------

    def _watch_events(self, loop: asyncio.AbstractEventLoop) -> None:
        """Block on the store's event log and hand new events to the loop.

        Events from this process, other workers, other replicas and the CLI all
        arrive here, so socket closing and dashboard updates have one path.
        """
        backoff = 0.5
        while not self._stop.is_set():
            try:
                events = self.service.wait_events(self._event_seq, EVENT_WAIT)
                backoff = 0.5
            except Exception as exc:  # the store is down: keep serving, retry
                if self.store_healthy:
                    logger.error("event log unreadable, retrying: %s", exc)
                self._set_store_healthy(False)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, STORE_RETRY_CAP)
                continue
            self._set_store_healthy(True)
            if events:
                self._event_seq = events[-1].seq
                loop.call_soon_threadsafe(self._dispatch, events)
                self._observe_events(events)

    def _set_store_healthy(self, healthy: bool) -> None:
        if healthy != self.store_healthy:
            logger.warning("pairing store %s", "reachable again" if healthy else "unreachable")
        self.store_healthy = healthy
        self.metrics.store_up.set(1 if healthy and self.store_problem is None else 0)

    def _observe_events(self, events: Sequence[Event]) -> None:
        """Count and audit each event once over all workers, then refresh the gauges.

        Every worker sees every event, so the store's ``claim`` picks the one that
        counts it. The gauges are refreshed at once so a scrape right after an
        approval is already right (housekeeping refreshes them every 5 s too).
        """
        try:
            owned = self.store.claim(CLAIM_AUDIT, [event.seq for event in events])
            for event in events:
                if event.seq in owned:
                    self.metrics.store_event(event.type, event.data)
                    audit_event(event)
            if any(changes_pairing_state(event.type) for event in events):
                self._refresh_pairing_gauges()
        except Exception as exc:
            logger.error("could not count or audit store events: %s", exc)

    def _dispatch(self, events: Sequence[Event]) -> None:
        self.service.apply_events(events)
        self.hub.dispatch(events)
        self.notifier.submit(events)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                await asyncio.to_thread(self._housekeeping_once)
            except Exception as exc:
                logger.error("housekeeping failed: %s", exc)

    async def _watch_store_file(self) -> None:
        """Notice the store's file vanish, shrink, be replaced or fail ``quick_check``.

        A stat every ``STORE_FILE_CHECK`` seconds and an integrity check every
        ``QUICK_CHECK_EVERY`` stats: cheap, and soon enough that ``/readyz`` takes
        the gateway out of rotation before the next restart starts it empty.
        """
        checks = 0
        while self.store_problem is None:
            await asyncio.sleep(STORE_FILE_CHECK)
            checks += 1
            await asyncio.to_thread(self.check_store_file, deep=checks % QUICK_CHECK_EVERY == 0)

    def check_store_file(self, *, deep: bool = False) -> str | None:
        """What happened to the store's file, if anything; the first finding is logged once.

        ``/readyz`` calls it too (one stat), so a probe right after the damage
        already sees it; the finding stays until the gateway is restarted.
        """
        if self.store_problem is not None:
            return self.store_problem
        try:
            problem = self.store.file_problem(deep=deep)
        except Exception as exc:
            problem = f"the pairing store's file cannot be checked ({exc})"
        if problem is None:
            return None
        with self._store_problem_lock:
            if self.store_problem is not None:
                return self.store_problem
            self.store_problem = problem
        self.metrics.store_up.set(0)
        logger.error(
            "%s under the running gateway: devices and pairing requests may be lost; /readyz now "
            "reports not ready. Stop edge serve, restore the file from a backup (or start over "
            "on purpose with `edge store reset`), then start it again",
            problem,
            extra={"signal": "store_file"},
        )
        return problem

    def _housekeeping_once(self) -> None:
        self.service.sweep()
        self.service.flush_touches()
        self._refresh_pairing_gauges()

    def _refresh_pairing_gauges(self) -> None:
        pending, by_role = self.service.counts()
        self.metrics.set_pairing_state(pending, by_role)
