"""The gateway's lifecycle: start, stop, reload, and the background work in between.

``Gateway`` owns no decision of a request: the components that decide (the
middlewares, the routes, the socket hub) take what they use as arguments,
wired in ``edge.app``. What it runs is what outlives a request: the thread that
follows the store's event log and hands events to the loop, housekeeping, the
store file watch, webhook delivery, the worker registration, and ``reload``,
which swaps the ``Live`` configuration in one assignment.
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
from pathlib import Path

from edge.config import ConfigError, Settings, load_settings
from edge.datadir import permission_problems
from edge.gateway.blocking import Blocking
from edge.gateway.health import StoreHealth
from edge.gateway.live import Live, live_config
from edge.gateway.notify import Notifier
from edge.gateway.sockets import SocketHub
from edge.gateway_token import GatewayTokenError, load_gateway_token
from edge.hostcheck import running_reverse_proxies, same_host_proxy_advice
from edge.logs import SignalWarner, audit_event, setup_logging
from edge.metrics import Metrics, changes_pairing_state, mark_worker_dead
from edge.pairing.models import Event
from edge.pairing.service import PairingService
from edge.pairing.store import CLAIM_AUDIT, Store
from edge.peercred import LOOKUPS, peer_check_summary
from edge.workers import register_worker, unregister_worker

logger = logging.getLogger("edge.gateway")

SWEEP_INTERVAL = 5.0
STORE_FILE_CHECK = 2.0  # seconds between stats of the store's file
QUICK_CHECK_EVERY = 30  # file checks per PRAGMA quick_check (about a minute)
EVENT_WAIT = 0.25
STORE_RETRY_CAP = 1.0  # seconds between retries while the store is down: /readyz recovers fast
# Where metrics are served is bound at start (routes, the guard, the listener socket).
METRICS_FIXED_AT_START = {"enabled", "path", "host", "port"}


class Gateway:
    """One app's running state; ``edge.app.build_gateway`` makes it from settings."""

    def __init__(
        self,
        *,
        live: Live,
        store: Store,
        service: PairingService,
        metrics: Metrics,
        blocking: Blocking,
        health: StoreHealth,
        hub: SocketHub,
        notifier: Notifier,
        warner: SignalWarner,
    ) -> None:
        self.live = live
        self.store = store
        self.service = service
        self.metrics = metrics
        self.blocking = blocking
        self.health = health
        self.hub = hub
        self.notifier = notifier
        self.warner = warner
        self.started_at = time.time()
        self._stop = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: threading.Thread | None = None
        self._event_seq = service.latest_seq()
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
            await self.blocking.run(self._refresh_pairing_gauges)
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
            await self.blocking.run(self._watcher.join, 2.0)
        with contextlib.suppress(Exception):
            await self.blocking.run(self.service.flush_touches)
        self.blocking.close()
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
        self.live.replace(live)
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
                if self.health.healthy:
                    logger.error("event log unreadable, retrying: %s", exc)
                self.health.set_healthy(False)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, STORE_RETRY_CAP)
                continue
            self.health.set_healthy(True)
            if events:
                self._event_seq = events[-1].seq
                loop.call_soon_threadsafe(self._fan_out, events)
                self._observe_events(events)

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

    def _fan_out(self, events: Sequence[Event]) -> None:
        """Hand a batch to each consumer on the loop; one that fails does not starve the rest."""
        for consume in (self.service.apply_events, self.hub.deliver, self.notifier.submit):
            try:
                consume(events)
            except Exception:
                logger.exception("store events not fully applied (seq %d..)", events[0].seq)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                await self.blocking.run(self._housekeeping_once)
            except Exception as exc:
                logger.error("housekeeping failed: %s", exc)

    async def _watch_store_file(self) -> None:
        """Notice the store's file vanish, shrink, be replaced or fail ``quick_check``.

        A stat every ``STORE_FILE_CHECK`` seconds and an integrity check every
        ``QUICK_CHECK_EVERY`` stats: cheap, and soon enough that ``/readyz`` takes
        the gateway out of rotation before the next restart starts it empty.
        """
        checks = 0
        while self.health.problem is None:
            await asyncio.sleep(STORE_FILE_CHECK)
            checks += 1
            await self.blocking.run(self.health.check_file, deep=checks % QUICK_CHECK_EVERY == 0)

    def _housekeeping_once(self) -> None:
        self.service.sweep()
        self.service.flush_touches()
        self._refresh_pairing_gauges()

    def _refresh_pairing_gauges(self) -> None:
        pending, by_role = self.service.counts()
        self.metrics.set_pairing_state(pending, by_role)
