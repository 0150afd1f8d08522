"""The HTTP half of forwarding: the pooled aiohttp client and the relay of one request.

HTTP goes over one ``aiohttp.ClientSession`` per upstream and event loop (a
keepalive pool; when the connection drops before an answer, as an idle one
the upstream closed does, aiohttp sends an idempotent request once more, never
a POST nor a body already streamed). aiohttp because it is the fastest
client for this job that ``benchmarks/proxy.py`` measures: 1.5 to 1.7 times
the requests/s of an h11 transport driven through ``httpx``, and three to
five times httpx's own pool however tuned (``docs/performance.md``, "Proxy
forwarding").

An unreachable upstream is answered 502 and a slow one 504, as JSON; a
request whose path or headers cannot be sent unchanged is answered 400
rather than altered. Bodies stream both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable

import aiohttp
from starlette.types import Receive, Scope, Send

from edge.config import UpstreamSettings
from edge.gateway.answers import refuse_http
from edge.gateway.context import auth_of, request_id_of, resolution_of
from edge.gateway.forwarding.headers import response_headers, upstream_request_headers
from edge.gateway.forwarding.paths import UpstreamPaths
from edge.refusals import Rejection

# aiohttp adds these unless told not to; the upstream should see only what the client sent.
NOT_ADDED = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
MAX_CONNECTIONS = 512
KEEPALIVE_EXPIRY = 4.0  # below uvicorn's 5 s keep-alive, so Edge lets go of an idle one first
MAX_HEADER_LINE = 64 * 1024  # long Set-Cookie and CSP lines are real; aiohttp's default is 8 KiB
READ_SIZE = 64 * 1024


class ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class UnsendableHeader(Exception):
    """A request header value aiohttp could not send byte for byte."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def text_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Headers as aiohttp takes them: it writes values as UTF-8, so only UTF-8 round-trips."""
    text: list[tuple[str, str]] = []
    for name, value in headers:
        try:
            text.append((name.decode("latin-1"), value.decode("utf-8")))
        except UnicodeDecodeError:
            raise UnsendableHeader(name.decode("latin-1")) from None
    return text


def upstream_session(
    upstream: UpstreamSettings, *, max_connections: int = MAX_CONNECTIONS
) -> aiohttp.ClientSession:
    """The pooled client for one upstream, on the running event loop.

    ``timeout`` bounds each wait for the next bytes of the upstream's answer
    (the upload is bounded by the caller: ``RequestBody``) and
    ``connect_timeout`` the wait for a pooled or new connection. It keeps no
    cookies (every caller shares it), takes no proxy from the environment and
    leaves bodies as the upstream encoded them.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_EXPIRY
        ),
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=upstream.connect_timeout,
            sock_connect=upstream.connect_timeout,
            sock_read=upstream.timeout,
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=NOT_ADDED,
        auto_decompress=False,
        trust_env=False,
        max_line_size=MAX_HEADER_LINE,
        max_field_size=MAX_HEADER_LINE,
    )


class SessionPool:
    """One upstream's pooled clients, one per event loop (a test client may run several in turn)."""

    def __init__(self, upstream: UpstreamSettings) -> None:
        self.upstream = upstream
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def session(self) -> aiohttp.ClientSession:
        """This event loop's pooled client."""
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            for old_loop in [known for known in self._sessions if known.is_closed()]:
                del self._sessions[old_loop]
            session = upstream_session(self.upstream)
            self._sessions[loop] = session
        return session

    async def aclose(self) -> None:
        """Close this event loop's pooled connections."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()


def has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class RequestBody:
    """The client's request body, pulled by aiohttp as it writes to the upstream.

    aiohttp has no write timeout, so an upstream that stops reading would stall
    an upload for ever. While aiohttp holds a chunk, the caller's ``deadline``
    (an ``asyncio.timeout`` around the request) is set ``write_timeout`` ahead;
    it is lifted again once the chunk is taken, so a slow client costs nothing.
    """

    def __init__(self, receive: Receive, write_timeout: float) -> None:
        self._receive = receive
        self._write_timeout = write_timeout
        self.deadline: asyncio.Timeout | None = None
        self.client_gone = False
        self.finished = asyncio.Event()  # the whole body was read (or the client left)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self.client_gone = True
                    raise ClientGone
                body = message.get("body", b"")
                if body:
                    self._set_deadline(self._write_timeout)
                    yield body
                    self._set_deadline(None)
                if not message.get("more_body", False):
                    return
        finally:
            self.finished.set()

    def _set_deadline(self, seconds: float | None) -> None:
        deadline = self.deadline
        if deadline is not None and not deadline.expired():
            when = None if seconds is None else asyncio.get_running_loop().time() + seconds
            deadline.reschedule(when)


async def relay_body(response: aiohttp.ClientResponse, send: Send) -> None:
    async for chunk in response.content.iter_chunked(READ_SIZE):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def wait_disconnect(receive: Receive, body_read: asyncio.Event) -> None:
    """Until the client disconnects; ``receive`` is the body's until all of it is read."""
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_simple(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [(b"content-length", str(len(body)).encode("ascii")), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


Observe = Callable[[int, float], None]  # the upstream's status and how long it took
Warn = Callable[[str, BaseException], None]  # what went wrong ("timeout", ...) and why


async def forward_http(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    upstream: UpstreamSettings,
    paths: UpstreamPaths,
    pool: SessionPool,
    observe: Observe,
    warn: Warn,
) -> None:
    """Relay one admitted HTTP request to ``upstream`` and its answer back."""
    target = paths.target(scope)
    if target is None:
        await refuse_http(send, Rejection.PATH_UNFORWARDABLE)
        return
    try:
        client_headers = upstream_request_headers(
            scope["headers"],
            resolution_of(scope),
            auth_of(scope),
            request_id=request_id_of(scope),
        )
        headers = text_headers(client_headers)
    except UnsendableHeader as exc:
        detail = f"header {exc.name!r} is not UTF-8 and cannot be forwarded unchanged"
        await refuse_http(send, Rejection.HEADER_UNSENDABLE, detail)
        return
    body = RequestBody(receive, upstream.timeout)
    if not has_body(scope["headers"]):
        body.finished.set()
    label = upstream.label
    started = time.perf_counter()
    try:
        async with asyncio.timeout(None) as body.deadline:
            response = await pool.session().request(
                scope["method"],
                paths.http_url(target),
                headers=headers,
                data=None if body.finished.is_set() else body.chunks(),
                allow_redirects=False,
            )
    except TimeoutError as exc:
        if body.client_gone:
            return
        observe(504, time.perf_counter() - started)
        warn("timeout", exc)
        detail = f"upstream {label!r} did not answer in time ({type(exc).__name__})"
        await refuse_http(send, Rejection.UPSTREAM_TIMEOUT, detail)
        return
    except aiohttp.ClientError as exc:
        if body.client_gone:
            return
        observe(502, time.perf_counter() - started)
        warn("unreachable", exc)
        detail = f"upstream {label!r} is unreachable or answered badly ({type(exc).__name__})"
        await refuse_http(send, Rejection.UPSTREAM_UNREACHABLE, detail)
        return
    finally:
        body.deadline = None
    observe(response.status, time.perf_counter() - started)
    try:
        await _relay_response(response, body, receive, send, upstream, paths, warn)
    finally:
        # aiohttp pooled the connection already if the body was read whole;
        # after a partial read it cannot be reused, and this closes it.
        response.close()


async def _relay_response(
    response: aiohttp.ClientResponse,
    body: RequestBody,
    receive: Receive,
    send: Send,
    upstream: UpstreamSettings,
    paths: UpstreamPaths,
    warn: Warn,
) -> None:
    headers = []
    for name, value in response_headers(
        response.raw_headers,
        on_control_origin=upstream.on_control_origin,
        sandbox=upstream.sandbox,
    ):
        if name in (b"location", b"content-location"):
            value = paths.rewrite_location(value)
        headers.append((name, value))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    relay = asyncio.ensure_future(relay_body(response, send))
    watcher = asyncio.ensure_future(wait_disconnect(receive, body.finished))
    try:
        await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not relay.done():  # the client left: stop reading the upstream
            relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        try:
            await relay
        except asyncio.CancelledError:
            pass
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The status is sent already. Returning without the final body
            # message makes the server cut the connection, which tells the
            # client the body is incomplete.
            if not body.client_gone:  # else the client left mid-upload: nothing broke
                warn("broke off mid-body", exc)
