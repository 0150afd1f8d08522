"""Bounded request heads for ``edge serve``: a size cap, a deadline, a per-address connection cap.

uvicorn reads a request head for as long as the client takes and, with
httptools, as large as the client sends: a head sent a byte every two seconds
held its connection for ever (slow-loris), and twenty unfinished 4 MiB heads
grew a worker by 87 MiB. Edge is documented for direct exposure on a LAN, so
the server itself has to bound what it buffers before the app sees a request:

- ``max_bytes``: a head (request line and headers) longer than this is
  answered ``431`` and the connection closed;
- ``deadline``: from the connection's opening (or the end of the previous
  response, on a kept-alive connection) to the end of the head; past it the
  connection is closed (``408``);
- ``per_address``: open connections from one peer address, counted until the
  connection closes (WebSocket ones too); past it a new one is closed at once
  (``503``). Peers in ``proxy.trusted_proxies`` are exempt: every client of a
  reverse proxy arrives from its address, and the proxy limits its clients.

Each refusal is counted in ``edge_request_heads_refused_total{reason}``
(``too_large``, ``slow``, ``too_many_connections``).

``HeadLimitsMixin`` goes in front of a uvicorn HTTP protocol class, so it
composes with other mixins (``class P(HeadLimitsMixin, Other, HttpToolsProtocol)``);
``HeadLimitedHttpToolsProtocol`` and ``HeadLimitedH11Protocol`` are the plain
compositions. The limits are process-wide (``configure``), because uvicorn
builds protocols from a class it may import afresh in each worker; ``edge
serve`` and every worker's app configure them from the same settings.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edge.net import NetworkSet

if TYPE_CHECKING:
    from edge.config import Settings

REASONS = ("too_large", "slow", "too_many_connections")
_END_OF_HEAD = b"\r\n\r\n"
_STATUS = {
    "too_large": b"431 Request Header Fields Too Large",
    "slow": b"408 Request Timeout",
    "too_many_connections": b"503 Service Unavailable",
}
_DETAIL = {
    "too_large": b"the request head is larger than the gateway accepts",
    "slow": b"the request head did not arrive in time",
    "too_many_connections": b"too many open connections from this address",
}


@dataclass(frozen=True)
class HeadLimits:
    max_bytes: int = 64 * 1024
    deadline: float = 10.0
    per_address: int = 256
    exempt: NetworkSet = field(default_factory=NetworkSet)

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        server = settings.server
        return cls(
            max_bytes=server.max_head_bytes,
            deadline=server.head_timeout,
            per_address=server.max_connections_per_address,
            exempt=NetworkSet.parse(settings.proxy.trusted_proxies),
        )


_limits = HeadLimits()
_open: Counter[str] = Counter()
_listener: Callable[[str], None] | None = None


def configure(limits: HeadLimits) -> None:
    """Set the limits for every connection this process accepts from now on."""
    global _limits
    _limits = limits


def on_refused(listener: Callable[[str], None]) -> None:
    """Call ``listener(reason)`` for each refusal: the app's metrics (the latest app's)."""
    global _listener
    _listener = listener


def open_connections(address: str) -> int:
    """Connections from ``address`` open in this process now."""
    return _open[address]


def _refused(reason: str) -> None:
    if _listener is not None:
        _listener(reason)


class HeadLimitsMixin:
    """Bounds the head of every request on a connection; put it before the uvicorn protocol."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        limits = self._head_limits = _limits
        self._head_bytes = 0
        self._head_tail = b""
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = 0.0
        self._counted: str | None = None
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        if isinstance(address, str) and address not in limits.exempt:
            if _open[address] >= limits.per_address:
                self._refuse_head("too_many_connections")
                return
            _open[address] += 1
            self._counted = address
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._in_head and data:
            seen = self._head_tail + data
            end = seen.find(_END_OF_HEAD)
            if end >= 0:
                size = self._head_bytes - len(self._head_tail) + end + len(_END_OF_HEAD)
                if size > self._head_limits.max_bytes:
                    self._refuse_head("too_large")
                    return
                self._end_head()
            else:
                self._head_bytes += len(data)
                if self._head_bytes > self._head_limits.max_bytes:
                    self._refuse_head("too_large")
                    return
                self._head_tail = seen[-(len(_END_OF_HEAD) - 1) :]
        super().data_received(data)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():  # kept alive: the next head is bounded the same way
            self._in_head = True
            self._head_bytes = 0
            self._head_tail = b""
            self._arm_head_timer()

    def handle_websocket_upgrade(self, *args: Any) -> None:
        self._cancel_head_timer()  # no more heads here: nothing may keep this protocol alive
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]
        # The WebSocket protocol owns the transport from here; release the count when it ends.
        protocol: Any = self.transport.get_protocol()
        counted, self._counted = self._counted, None
        if counted is not None and protocol is not self:
            lost = protocol.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                _release(counted)
                lost(exc)

            protocol.connection_lost = connection_lost
        elif counted is not None:
            self._counted = counted

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._counted is not None:
            _release(self._counted)
            self._counted = None
        super().connection_lost(exc)  # type: ignore[misc]

    # -- internals -------------------------------------------------------------------

    # One timer per connection, not one per request: a head's start is noted (a clock
    # read) and the timer, when it fires, either refuses a head that has taken the whole
    # deadline or sleeps until the current head's own deadline. A kept-alive connection
    # answering many requests a second thus sets a timer about once per deadline, where
    # arming and cancelling one per request cost more than the rest of this class.

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_started = loop.time()
        if self._head_timer is None:
            self._head_timer = loop.call_at(
                self._head_started + self._head_limits.deadline, self._head_deadline
            )

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _end_head(self) -> None:
        self._in_head = False
        self._head_tail = b""

    def _head_deadline(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return  # no head pending: the next one arms the timer again
        loop = asyncio.get_running_loop()
        due = self._head_started + self._head_limits.deadline
        if loop.time() >= due:
            self._refuse_head("slow")
        else:  # a later head, begun after this timer was set: its own deadline
            self._head_timer = loop.call_at(due, self._head_deadline)

    def _refuse_head(self, reason: str) -> None:
        self._in_head = False
        self._cancel_head_timer()
        _refused(reason)
        if self.transport.is_closing():
            return
        body = b'{"error":"bad_request","reason":"' + reason.encode() + b'","detail":"'
        body += _DETAIL[reason] + b'"}'
        self.transport.write(
            b"HTTP/1.1 " + _STATUS[reason] + b"\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()


def _release(address: str) -> None:
    _open[address] -= 1
    if _open[address] <= 0:
        del _open[address]


class HeadLimitedHttpToolsProtocol(HeadLimitsMixin, HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads."""


class HeadLimitedH11Protocol(HeadLimitsMixin, H11Protocol):
    """uvicorn's h11 protocol with bounded heads."""
