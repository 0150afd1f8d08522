"""Logging: plain text or one JSON object per line, rate-limited warnings, and the audit trail.

Misconfiguration signals (proxy headers from an untrusted peer, malformed
chains) can arrive on every request; ``SignalWarner`` logs each distinct
signal once per interval, with the config key that fixes it, so the log stays
readable and the line an operator searches for is there.

The audit trail (logger ``edge.audit``) has one line per store event: who
asked to pair and from where, who approved, rejected, revoked or rotated, and
which address was locked out. It is written from the event log, so actions of
the CLI, the dashboard and other workers are all in it, once.

Every line a process writes goes through one handler, configured once by
``log_config``: ``edge serve`` hands the same dictionary to uvicorn as its
``log_config`` and applies it itself before anything is written, so with
``format: json`` the first line of stderr is JSON already, uvicorn's start-up
lines and those of the libraries under it (through the root logger) included.
uvicorn's ``color_message`` field and any ANSI escape stay out of every line.
While a request is handled, its id (``edge.request_ids``) is added to every
line as ``x_request_id``; the audit line of an event a request caused carries
the same id, from the event's data.

Secrets never reach a line: the event log holds none, and both formatters
redact any extra field whose name says it is a token, secret or credential.
The protocol libraries under uvicorn are another matter: at debug level the
``websockets`` implementation logs the request's header lines (``Cookie``,
``Authorization``) and the start of every frame (the gateway token in a
``connect`` frame, the device token in ``hello``). ``ProtocolContentFilter``
drops every record below INFO that such code writes, whatever
``logging.level`` says; connection errors and uvicorn's own INFO lines stay.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from edge import request_ids
from edge.config import LoggingSettings
from edge.pairing.models import Event

LOGGER_NAME = "edge"
AUDIT_LOGGER_NAME = "edge.audit"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Where the protocol libraries log: uvicorn hands its own logger to websockets.
PROTOCOL_LOGGERS = (
    *UVICORN_LOGGERS,
    "websockets",
    "websockets.server",
    "websockets.protocol",
    "websockets.client",
)
# Source directories whose debug records quote raw headers or frames.
_PROTOCOL_PACKAGES = ("websockets", "wsproto", "h11", "httptools", "h2", "hpack")
_UVICORN_PROTOCOLS = os.sep.join(("uvicorn", "protocols"))
REDACTED = "[redacted]"
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# uvicorn's coloured copy of its message: terminal escapes, never wanted in a log line.
_DROPPED = frozenset({"color_message"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_SECRET_WORDS = ("token", "secret", "password", "authorization", "cookie", "hash", "credential")


def is_secret_field(name: str) -> bool:
    """Whether a log field's name says its value is a credential (and must not be written)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: REDACTED if is_secret_field(key) else value
        for key, value in record.__dict__.items()
        if key not in _RESERVED and key not in _DROPPED and not key.startswith("_")
    }


def _plain(text: str) -> str:
    """``text`` without terminal escape sequences (a library's colours, a client's tricks)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def _timestamp(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={...}`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _plain(record.getMessage()),
        }
        for key, value in _extra_fields(record).items():
            payload.setdefault(key, value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"), ensure_ascii=False)


def _logfmt_value(value: object) -> str:
    text = "null" if value is None else str(value)
    if text == "" or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``; values with spaces are quoted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = _plain(super().format(record))
        extras = _extra_fields(record)
        if extras:
            text += " " + " ".join(f"{k}={_logfmt_value(v)}" for k, v in extras.items())
        return text


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is now, not what it was when logging was set up."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """The stream always follows ``sys.stderr``; assignments are ignored."""


class ProtocolContentFilter(logging.Filter):
    """Drops debug and trace records written by HTTP and WebSocket protocol code.

    Those records quote what crossed the wire (header lines, frame text), so
    they would write credentials; what they add for an operator (frame
    boundaries, pings) is not worth it. Records at INFO and above pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        return not is_protocol_source(record.pathname)


def is_protocol_source(pathname: str) -> bool:
    """Whether a record comes from a protocol library or uvicorn's protocol modules."""
    parts = pathname.split(os.sep)
    return _UVICORN_PROTOCOLS in pathname or any(p in parts for p in _PROTOCOL_PACKAGES)


_PROTOCOL_FILTER = ProtocolContentFilter()


def silence_protocol_content() -> None:
    """Install ``ProtocolContentFilter`` on the protocol loggers and their handlers (idempotent).

    On the loggers for records logged on them directly, on the handlers for
    records that propagate from child loggers.
    """
    for name in PROTOCOL_LOGGERS:
        target = logging.getLogger(name)
        for holder in (target, *target.handlers):
            if _PROTOCOL_FILTER not in holder.filters:
                holder.addFilter(_PROTOCOL_FILTER)


class RequestIdFilter(logging.Filter):
    """Adds the id of the request being handled, if any, to a record (``x_request_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_ids.current.get()
        if request_id is not None and not hasattr(record, request_ids.FIELD):
            setattr(record, request_ids.FIELD, request_id)
        return True


_REQUEST_ID_FILTER = RequestIdFilter()


def shared_filter(name: str) -> logging.Filter:
    """The process's one instance of a filter, for ``dictConfig`` (``"()": shared_filter``).

    One instance, so ``setup_logging`` and ``silence_protocol_content`` see the
    filters ``log_config`` installed and do not add them twice.
    """
    return {"request_id": _REQUEST_ID_FILTER, "protocol": _PROTOCOL_FILTER}[name]


def make_formatter(settings: LoggingSettings) -> logging.Formatter:
    return JsonFormatter() if settings.format == "json" else TextFormatter()


def log_config(settings: LoggingSettings) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a gateway process: uvicorn's ``log_config`` too.

    One handler on stderr for Edge's loggers, uvicorn's and the root (where
    ``websockets``, ``asyncio`` and other libraries log), with the request-id
    and protocol-content filters on it. uvicorn applies it in the supervisor
    and again in each worker it starts, before its first line; nothing is
    re-formatted after the fact.
    """
    level = settings.level.upper()
    formatter = (
        "edge.logs.JsonFormatter" if settings.format == "json" else "edge.logs.TextFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "edge.logs.shared_filter", "name": "request_id"},
            "protocol": {"()": "edge.logs.shared_filter", "name": "protocol"},
        },
        "formatters": {"edge": {"()": formatter}},
        "handlers": {
            "stderr": {
                "()": "edge.logs.StderrHandler",
                "formatter": "edge",
                "filters": ["request_id", "protocol"],
            }
        },
        "loggers": {
            LOGGER_NAME: {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level, "propagate": True},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def configure_process_logging(settings: LoggingSettings) -> None:
    """Apply ``log_config`` to this process: what ``edge serve`` does before its first line."""
    logging.config.dictConfig(log_config(settings))
    silence_protocol_content()


def setup_logging(settings: LoggingSettings) -> None:
    """Configure the ``edge`` logger once per process (idempotent; a reload updates it).

    Under ``edge serve`` the handler is the one ``log_config`` made, shared with
    uvicorn's loggers, so a reload's new format reaches their lines too. Under
    a server Edge did not configure, uvicorn's own handlers get the JSON
    formatter as well, so a log shipper never meets a plain-text line in the
    middle of the stream.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(settings.level.upper())
    logger.propagate = False
    formatter = make_formatter(settings)
    handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
    if handler is None:
        handler = StderrHandler()
        logger.addHandler(handler)
    handler.setFormatter(formatter)
    if _REQUEST_ID_FILTER not in handler.filters:
        handler.addFilter(_REQUEST_ID_FILTER)
    silence_protocol_content()
    if settings.format == "json":
        for name in UVICORN_LOGGERS:
            for uvicorn_handler in logging.getLogger(name).handlers:
                uvicorn_handler.setFormatter(formatter)


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


# -- the audit trail --------------------------------------------------------------------------

_AUDIT_MESSAGES = {
    "pairing.requested": (
        "pairing request {request_id} from {client_ip}: device {device} asks for {role} ({reason})"
    ),
    "pairing.resolved": (
        "pairing request {request_id} {decision} by {actor}: device {device}, "
        "requested from {client_ip}"
    ),
    "device.paired": "device {device} paired as {role} by {actor}",
    "device.token_rotated": "device token of {device} replaced ({reason}) by {actor}",
    "device.revoked": "device {device} revoked by {actor}",
    "device.renamed": "device {device} renamed (was {previous_name}) by {actor}",
    "device.user_assigned": "device {device} assigned user {user} (was {previous_user}) by {actor}",
    "device.expired": "device {device} removed after being idle, by {actor}",
    "invite.created": "invite {invite_id} for a {role} device created by {actor}",
    "invite.cancelled": "invite {invite_id} cancelled by {actor}",
    "invite.used": "invite {invite_id} used: device {device} paired as {granted_role}",
    "auth.lockout": "client {client_ip} locked out for {lockout}s after {failures} failed attempts",
    "auth.unlocked": "lockout of client {client_ip} lifted by {actor}",
}
# Event keys that would collide with LogRecord attributes, or read better renamed.
_AUDIT_RENAMES = {"name": "device_name", "client": "client_ip"}


class _Fields(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "-"


def audit_fields(event: Event) -> dict[str, object]:
    """The structured fields of an audit line: the event's data, renamed, secrets redacted."""
    fields: dict[str, object] = {"event": event.type, "seq": event.seq}
    for key, value in event.data.items():
        name = _AUDIT_RENAMES.get(key, key)
        if name in _RESERVED or name in fields:
            name = f"data_{name}"
        fields[name] = REDACTED if is_secret_field(key) else value
    return fields


def audit_message(event: Event) -> str:
    """One sentence an operator can read: what happened, to which device, by whom, from where."""
    data: Mapping[str, object] = event.data
    values = _Fields({k: v for k, v in data.items() if v is not None and not is_secret_field(k)})
    device_id = data.get("device_id")
    name = data.get("name") or data.get("device_name")
    if isinstance(device_id, str):
        values["device"] = f"{device_id[:12]} ({name})" if name else device_id[:12]
    client = data.get("client_ip") or data.get("client")
    values["client_ip"] = client if client else "an unknown address"
    template = _AUDIT_MESSAGES.get(event.type, event.type)
    return template.format_map(values)


def audit_event(event: Event, logger: logging.Logger | None = None) -> None:
    """Write the audit line of one store event (once per event: see ``Store.claim``)."""
    (logger or logging.getLogger(AUDIT_LOGGER_NAME)).info(
        audit_message(event), extra=audit_fields(event)
    )
