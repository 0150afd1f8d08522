"""Whether the pairing store can be used: reachable, and its file intact.

Two findings, kept apart because they heal differently. ``healthy`` follows
the event watcher: an unreachable store (Redis restarting) comes back by
itself. ``problem`` is sticky: once the store's file is lost, shrunk, replaced
or fails ``quick_check`` under the running gateway, ``/readyz`` stays 503 until
a restart, because devices and requests may be gone with it.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import Gauge

from edge.pairing.store import Store

logger = logging.getLogger("edge.gateway")


class StoreHealth:
    """The store's health as ``/readyz`` and ``edge_store_up`` report it; thread-safe."""

    def __init__(self, store: Store, store_up: Gauge) -> None:
        self._store = store
        self._store_up = store_up
        self.healthy = True
        self.problem: str | None = None
        self._problem_lock = threading.Lock()

    def set_healthy(self, healthy: bool) -> None:
        if healthy != self.healthy:
            logger.warning("pairing store %s", "reachable again" if healthy else "unreachable")
        self.healthy = healthy
        self._store_up.set(1 if healthy and self.problem is None else 0)

    def check_file(self, *, deep: bool = False) -> str | None:
        """What happened to the store's file, if anything; the first finding is logged once.

        Blocking (a stat, or ``quick_check`` when ``deep``): async code calls it
        through ``edge.gateway.blocking``. ``/readyz`` calls it too, so a probe
        right after the damage already sees it.
        """
        if self.problem is not None:
            return self.problem
        try:
            problem = self._store.file_problem(deep=deep)
        except Exception as exc:
            problem = f"the pairing store's file cannot be checked ({exc})"
        if problem is None:
            return None
        with self._problem_lock:
            if self.problem is not None:
                return self.problem
            self.problem = problem
        self._store_up.set(0)
        logger.error(
            "%s under the running gateway: devices and pairing requests may be lost; /readyz now "
            "reports not ready. Stop edge serve, restore the file from a backup (or start over "
            "on purpose with `edge store reset`), then start it again",
            problem,
            extra={"signal": "store_file"},
        )
        return problem
