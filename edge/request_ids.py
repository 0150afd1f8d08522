"""Request ids: one per HTTP request or WebSocket, in every line it causes and every hop it takes.

A request id lets an operator follow one request from the reverse proxy's
log through Edge's access and audit lines to the upstream's log. A proxy in
``proxy.trusted_proxies`` may send its own (``X-Request-ID``, as nginx's
``$request_id`` or Caddy's ``{http.request.uuid}``), so the three logs share
one id; from anybody else the header is ignored, so a client cannot plant an
id that makes its request look like someone else's. A value that is too long
or holds anything but visible ASCII is ignored too: it would go into log
lines and headers as it is.

The id of the request being handled is a context variable: the log filter
reads it for every line written while the request runs, and the pairing
store writes it into the events the request causes (``stamped``), so the
audit line, written later by whichever worker claims the event, carries it
as well. Context variables follow the request into the blocking door's
threads (``Blocking.run`` copies them). This module is pure: no Starlette,
so ``edge.pairing`` may use it.
"""

from __future__ import annotations

import contextvars
import os
import random
from collections.abc import Mapping

HEADER = "x-request-id"
_HEADER = HEADER.encode("ascii")
# The log field and event key: ``request_id`` already names a pairing request in the audit trail.
FIELD = "x_request_id"
MAX_LENGTH = 128

current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "edge_request_id", default=None
)


def acceptable(value: bytes) -> str | None:
    """A proxy's ``X-Request-ID`` if it may be used as it is: 1 to 128 visible ASCII characters."""
    if not 0 < len(value) <= MAX_LENGTH:
        return None
    if any(c < 0x21 or c > 0x7E for c in value):
        return None
    return value.decode("ascii")


# An id names a request and guards nothing, so it need not be unpredictable: a
# generator seeded from the OS (again in a forked child, so two workers never
# share a sequence) makes one without a system call per request.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def generate() -> str:
    """A new id: 32 hex digits (128 random bits), the shape of nginx's ``$request_id``."""
    return f"{_random.getrandbits(128):032x}"


def choose(headers: list[tuple[bytes, bytes]], *, trusted_peer: bool) -> str:
    """The request's id: a trusted proxy's valid ``X-Request-ID``, else a new one."""
    if trusted_peer:
        for name, value in headers:
            if name == _HEADER or name.lower() == _HEADER:
                chosen = acceptable(value.strip())
                return chosen if chosen is not None else generate()
    return generate()


def stamped(data: Mapping[str, object]) -> Mapping[str, object]:
    """An event's data with the id of the request that caused it (unchanged outside a request)."""
    request_id = current.get()
    if request_id is None or FIELD in data:
        return data
    return {**data, FIELD: request_id}
