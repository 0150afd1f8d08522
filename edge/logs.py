"""Logging setup: plain text or one JSON object per line, and rate-limited warnings.

Misconfiguration signals (proxy headers from an untrusted peer, malformed
chains) can arrive on every request; ``SignalWarner`` logs each distinct
signal once per interval, with the config key that fixes it, so the log stays
readable and the line an operator searches for is there.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.config import LoggingSettings

LOGGER_NAME = "edge"
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={...}`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {
            k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")
        }
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


def setup_logging(settings: LoggingSettings) -> None:
    """Configure the ``edge`` logger once per process (idempotent)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(settings.level.upper())
    formatter: logging.Formatter = JsonFormatter() if settings.format == "json" else TextFormatter()
    for handler in logger.handlers:
        if getattr(handler, "_edge", False):
            handler.setFormatter(formatter)
            return
    handler = logging.StreamHandler(sys.stderr)
    handler._edge = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.propagate = False


class SignalWarner:
    """Logs each distinct signal at most once per ``interval`` seconds (thread-safe)."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warn(self, signal: str, message: str, **fields: object) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(signal)
            if last is not None and now - last < self._interval:
                self._suppressed[signal] = self._suppressed.get(signal, 0) + 1
                return False
            if len(self._last) > 1000:
                self._last.clear()
            self._last[signal] = now
            suppressed = self._suppressed.pop(signal, 0)
        if suppressed:
            message += f" ({suppressed} more like this since the last warning)"
        self._logger.warning(message, extra={"signal": signal, **fields})
        return True
