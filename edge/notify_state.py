"""Where webhook deliveries stand: ``<data_dir>/notify/state.json``, for ``edge notify status``.

The senders run inside the gateway's workers and the question comes from a
separate ``edge`` process, so the answer is a file both can reach. Every
worker that sends records each attempt's outcome under an exclusive lock
(``flock`` on ``state.lock``) with a read-modify-write of the whole file,
then an atomic rename: the file is right whichever of several workers sent
last, and a reader never sees half of it and needs no lock.

Per webhook it holds what all workers share (the last attempt, the last
success, the last error and when, the failures in a row since the last
success by any worker) and what each worker holds alone: the deliveries
waiting in its memory for a first or another attempt, and when the next is
due. A worker's share is read only while the worker is alive: waiting
deliveries live in memory, so a worker's exit ends them.

A webhook is filed under a digest of its URL, never the URL itself, which
may carry a token in its query; what is shown is ``safe_url``. The file is
this host's: gateways on other hosts sharing a Redis store keep their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.hostcheck import process_alive

STATE_DIR = "notify"
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
ERROR_MAX = 500  # characters of an error kept: a receiver's problem, not its whole answer


def safe_url(url: str) -> str:
    """A webhook URL for logs and status: no credentials, no query (receivers put tokens there)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def target_key(url: str) -> str:
    """The name a webhook is filed under: a digest of its full URL (which may hold a token)."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def state_dir(data_dir: Path) -> Path:
    return data_dir / STATE_DIR


@dataclass(frozen=True)
class TargetStatus:
    """One webhook as ``edge notify status`` shows it (times are epoch seconds)."""

    url: str
    last_attempt_at: float | None
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
    consecutive_failures: int
    pending: int
    next_attempt_at: float | None

    def to_json(self) -> dict[str, Any]:
        """camelCase keys and epoch milliseconds, as every ``--json`` document has them."""
        return {
            "url": self.url,
            "lastAttemptAt": _ms(self.last_attempt_at),
            "lastSuccessAt": _ms(self.last_success_at),
            "lastError": self.last_error,
            "lastErrorAt": _ms(self.last_error_at),
            "consecutiveFailures": self.consecutive_failures,
            "pending": self.pending,
            "nextAttemptAt": _ms(self.next_attempt_at),
        }


class NotifyState:
    """The state file of one data_dir, as the senders write it and the CLI reads it."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = state_dir(data_dir)
        self.path = self.directory / STATE_FILE

    # -- writing (the gateway's workers) -----------------------------------------------------

    def record_attempt(
        self,
        url: str,
        *,
        at: float,
        error: str | None,
        pending: int,
        next_attempt_at: float | None,
        pid: int | None = None,
    ) -> None:
        """One attempt's outcome (``error`` None: delivered) and this worker's queue after it."""
        with self._locked() as targets:
            entry = self._entry(targets, url)
            entry["last_attempt_at"] = at
            if error is None:
                entry["last_success_at"] = at
                entry["consecutive_failures"] = 0
            else:
                entry["last_error"] = error[:ERROR_MAX]
                entry["last_error_at"] = at
                entry["consecutive_failures"] = int(entry.get("consecutive_failures", 0)) + 1
            self._set_queue(entry, pid, pending, next_attempt_at)

    def record_queue(
        self, url: str, *, pending: int, next_attempt_at: float | None, pid: int | None = None
    ) -> None:
        """This worker's waiting deliveries for one webhook (0 when it stops)."""
        with self._locked() as targets:
            self._set_queue(self._entry(targets, url), pid, pending, next_attempt_at)

    @staticmethod
    def _entry(targets: dict[str, Any], url: str) -> dict[str, Any]:
        entry = targets.setdefault(target_key(url), {})
        entry["url"] = safe_url(url)
        return entry  # type: ignore[no-any-return]

    @staticmethod
    def _set_queue(
        entry: dict[str, Any], pid: int | None, pending: int, next_attempt_at: float | None
    ) -> None:
        queues = entry.setdefault("queues", {})
        key = str(os.getpid() if pid is None else pid)
        if pending:
            queues[key] = {"pending": pending, "next_attempt_at": next_attempt_at}
        else:
            queues.pop(key, None)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The targets, to change under the lock; written back atomically on exit."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            targets = self._read()
            yield targets
            tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": 1, "targets": targets}), encoding="utf-8")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        targets = document.get("targets") if isinstance(document, dict) else None
        return targets if isinstance(targets, dict) else {}

    # -- reading (edge notify status) ----------------------------------------------------------

    def status(self, url: str) -> TargetStatus:
        """One configured webhook's state; never attempted (or no file yet) reads as all empty."""
        entry = self._read().get(target_key(url), {})
        if not isinstance(entry, dict):
            entry = {}
        pending = 0
        due: list[float] = []
        for pid, queue in (entry.get("queues") or {}).items():
            if not (pid.isdigit() and isinstance(queue, dict) and process_alive(int(pid))):
                continue  # a worker that is gone took its waiting deliveries with it
            pending += int(queue.get("pending", 0))
            if isinstance(queue.get("next_attempt_at"), int | float):
                due.append(float(queue["next_attempt_at"]))
        return TargetStatus(
            url=safe_url(url),
            last_attempt_at=_number(entry.get("last_attempt_at")),
            last_success_at=_number(entry.get("last_success_at")),
            last_error=entry.get("last_error")
            if isinstance(entry.get("last_error"), str)
            else None,
            last_error_at=_number(entry.get("last_error_at")),
            consecutive_failures=int(entry.get("consecutive_failures", 0) or 0),
            pending=pending,
            next_attempt_at=min(due) if due and pending else None,
        )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)
