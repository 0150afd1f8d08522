"""The one door for blocking work: every store or service call made from async code.

The rule: code running on the event loop never calls the pairing store, or a
``PairingService`` method that may reach it, directly. It awaits
``Blocking.run(func, *args)``, which runs the call in a bounded thread pool of
this process. A store round trip (a network one with Redis, an fsync with
SQLite) then costs the request that needs it, never the other requests of the
worker. What touches no I/O stays on the loop: the credential check answers a
cached bearer token without a thread hop (``edge.gateway.guard.Authenticator``).

Why a door and not an async store end to end: the stores are synchronous
(``sqlite3``, redis-py) and the CLI, the event watcher thread and the contract
suite use them synchronously; an async twin of every store method would write
each decision a third time, and SQLite has no async driver that is not itself
a thread. The service's caches are thread-safe already, so one door in front
of them is the whole change, and the rule is easy to check: an ``await`` of
``run`` or a cache read, nothing else.

Why a pool of its own and bounded: the loop's default executor is shared with
everything else in the process (``getaddrinfo`` among them) and sized from the
CPU count; a slow store must not starve those, and must not grow threads (each
holding a store connection) without limit. When every thread is busy, further
calls queue here; they were waiting for the store anyway.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

# Store round trips one worker may have in flight at once. Each holds a thread (and a
# store connection) for one round trip, so 16 is far more than a worker's store traffic
# needs when the store is healthy, and the most connections a stalled store can tie up.
DEFAULT_THREADS = 16

logger = logging.getLogger("edge.gateway")

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Blocking:
    """A bounded thread pool for the blocking calls of one process's async code."""

    def __init__(self, max_threads: int = DEFAULT_THREADS, *, name: str = "edge-blocking") -> None:
        if max_threads < 1:
            raise ValueError("a blocking pool needs at least one thread")
        self.max_threads = max_threads
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                executor = self._executor
                if executor is None:
                    executor = ThreadPoolExecutor(self.max_threads, thread_name_prefix=self._name)
                    self._executor = executor
        return executor

    async def run(self, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``func(*args, **kwargs)`` in the pool, with the caller's context variables."""
        context = contextvars.copy_context()
        call = functools.partial(context.run, func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool(), call)

    def spawn(self, func: Callable[[], object]) -> None:
        """Run ``func`` in the pool and forget it: work whose answer nobody waits for.

        Nobody awaits it, so an exception it raises is logged here.
        """
        self._pool().submit(func).add_done_callback(_log_failure)

    def close(self) -> None:
        """Let the running calls finish and stop the threads; a later ``run`` starts new ones.

        An app may be started again after it stopped (the test client runs the
        lifespan once per session), so closing is not final.
        """
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=False)


def _log_failure(future: Future[object]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.error("background store work failed: %s", exc, exc_info=exc)
