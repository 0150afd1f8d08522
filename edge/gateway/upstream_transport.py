"""A lean HTTP/1.1 transport for the upstream ``httpx.AsyncClient``: one origin, a keepalive pool.

httpx's default connection pool (httpcore) re-examines every pooled
connection, through anyio's attribute machinery, whenever a request starts or
ends; under a few dozen concurrent requests that costs more than the
forwarding itself (measured in ``benchmarks/proxy.py``: about 300 requests per
second at 32 connections). This transport keeps idle connections in a stack,
bounds open connections with a semaphore and lets h11 do the protocol, so a
request costs the same with 1 or 500 connections open.

It speaks to exactly one origin (the upstream's), honours httpx's per-request
timeouts (``connect``, ``read``, ``write``, ``pool``) and raises httpx's
exceptions, so the client code around it is ordinary httpx. A request that
fails on a reused connection before any answer arrived (the upstream closed
its idle keepalive connection) is sent once more on a fresh connection when
it has no body.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

Timeouts = dict[str, float | None]
READ_SIZE = 64 * 1024
MAX_HEAD = 64 * 1024


class _Connection:
    """One TCP (or TLS) connection to the upstream and its h11 state."""

    __slots__ = ("idle_since", "protocol", "reader", "received", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.idle_since = time.monotonic()
        self.received = 0  # bytes of the current answer: none means it is safe to retry

    def usable(self, expiry: float | None) -> bool:
        if self.reader.at_eof() or self.writer.is_closing():
            return False
        return expiry is None or time.monotonic() - self.idle_since < expiry

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


async def _with_timeout(awaitable: Any, seconds: float | None, error: type[Exception]) -> Any:
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise error(f"no progress within {seconds} s") from None


class Http11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to one origin with a LIFO pool of keepalive connections."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_keepalive: int,
        keepalive_expiry: float | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._ssl = ssl_context

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: Timeouts = request.extensions.get("timeout", {})
        await _with_timeout(self._slots.acquire(), timeouts.get("pool"), httpx.PoolTimeout)
        try:
            return await self._send(request, timeouts)
        except BaseException:
            self._slots.release()
            raise

    async def _send(self, request: httpx.Request, timeouts: Timeouts) -> httpx.Response:
        connection, reused = await self._checkout(request, timeouts)
        try:
            return await self._exchange(connection, request, timeouts)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            connection.close()
            if not (reused and connection.received == 0 and _retryable(request)):
                raise
        except BaseException:
            connection.close()
            raise
        # The upstream had closed this idle connection: once more, on a new one.
        connection, _ = await self._checkout(request, timeouts, fresh=True)
        try:
            return await self._exchange(connection, request, timeouts)
        except BaseException:
            connection.close()
            raise

    async def _checkout(
        self, request: httpx.Request, timeouts: Timeouts, *, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        while self._idle and not fresh:
            connection = self._idle.pop()
            if connection.usable(self._expiry):
                return connection, True
            connection.close()
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            reader, writer = await _with_timeout(
                asyncio.open_connection(
                    url.host,
                    port,
                    ssl=self._ssl if url.scheme == "https" else None,
                    limit=MAX_HEAD,
                ),
                timeouts.get("connect"),
                httpx.ConnectTimeout,
            )
        except OSError as exc:
            raise httpx.ConnectError(f"{url.host}:{port}: {exc.strerror or exc}") from exc
        return _Connection(reader, writer), False

    async def _exchange(
        self, connection: _Connection, request: httpx.Request, timeouts: Timeouts
    ) -> httpx.Response:
        target = request.url.raw_path
        headers = [(name, value) for name, value in request.headers.raw]
        try:
            await self._write(
                connection,
                h11.Request(method=request.method, target=target, headers=headers),
                timeouts,
            )
            assert isinstance(request.stream, httpx.AsyncByteStream)
            async for chunk in request.stream:
                if chunk:
                    await self._write(connection, h11.Data(data=chunk), timeouts)
            await self._write(connection, h11.EndOfMessage(), timeouts)
            event = await self._next_event(connection, timeouts)
            while isinstance(event, h11.InformationalResponse):
                event = await self._next_event(connection, timeouts)
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        if not isinstance(event, h11.Response):
            raise httpx.RemoteProtocolError(f"expected a response, got {type(event).__name__}")
        return httpx.Response(
            event.status_code,
            headers=list(event.headers.raw_items()),
            stream=_ResponseStream(self, connection, timeouts),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason},
        )

    async def _write(self, connection: _Connection, event: Any, timeouts: Timeouts) -> None:
        data = connection.protocol.send(event)
        if not data:
            return
        try:
            connection.writer.write(data)
            await _with_timeout(
                connection.writer.drain(), timeouts.get("write"), httpx.WriteTimeout
            )
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc

    async def _next_event(self, connection: _Connection, timeouts: Timeouts) -> Any:
        protocol = connection.protocol
        while True:
            try:
                event = protocol.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await _with_timeout(
                    connection.reader.read(READ_SIZE), timeouts.get("read"), httpx.ReadTimeout
                )
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            connection.received += len(data)
            protocol.receive_data(data)

    def release(self, connection: _Connection, reusable: bool) -> None:
        """Give back a connection whose response has ended (or been abandoned)."""
        protocol = connection.protocol
        if (
            reusable
            and protocol.our_state is h11.DONE
            and protocol.their_state is h11.DONE
            and len(self._idle) < self._max_keepalive
        ):
            protocol.start_next_cycle()
            connection.idle_since = time.monotonic()
            connection.received = 0
            self._idle.append(connection)
        else:
            connection.close()
        self._slots.release()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _retryable(request: httpx.Request) -> bool:
    """Safe to send twice: idempotent, and no body that may have been consumed already."""
    return request.method in ("GET", "HEAD", "OPTIONS") and not (
        "content-length" in request.headers or "transfer-encoding" in request.headers
    )


class _ResponseStream(httpx.AsyncByteStream):
    """The body of one response; closing it returns the connection to the pool."""

    def __init__(
        self, transport: Http11Transport, connection: _Connection, timeouts: Timeouts
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._timeouts = timeouts
        self._complete = False
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._complete:
            event = await self._transport._next_event(self._connection, self._timeouts)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._complete = True
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("the upstream closed the connection mid-answer")

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._transport.release(self._connection, reusable=self._complete)
