"""Forward authenticated HTTP and WebSocket traffic to the configured ``upstreams``.

A request under an upstream's prefix reaches this module only once the guard
has admitted it (HTTP) or, for WebSockets, which the guard passes through,
once this module has checked the same credentials and the Origin itself.

What the upstream sees is rebuilt, never trusted, by the one header policy in
``edge.gateway.forwarding.headers``: hop-by-hop headers and every header named
in ``Connection`` are dropped (a client could otherwise make a proxy delete
the headers the upstream relies on, Traefik CVE-2024-45410); every forwarding
and identity header, in any spelling (``Remote_User`` is ``Remote-User`` to a
CGI-style app), is dropped and set afresh from the resolved client and the
authenticated caller; the credential that authenticated the caller to Edge
(the bearer token or Edge's session cookie) is not passed on. The path is the
one ``edge.gateway.forwarding.paths`` normalised before the prefix was
matched. An upstream on the control origin (``share_control_origin``) cannot
set or clear Edge's cookies, and its pages are sandboxed unless the operator
opted out. Bodies stream both ways.
An unreachable upstream is answered 502 and a slow one 504, as JSON.

HTTP goes over one ``aiohttp.ClientSession`` per upstream and event loop (a
keepalive pool; when the connection drops before an answer, as an idle one
the upstream closed does, aiohttp sends an idempotent request once more, never
a POST nor a body already streamed). It replaced a hand-written h11
transport under ``httpx`` when ``benchmarks/proxy.py`` measured it forwarding
1.5 to 1.7 times the requests/s of that transport, and httpx's own pool,
however tuned, a fifth to a third of it (``docs/performance.md``, "Proxy
forwarding"). WebSockets go over the ``websockets`` client, whose close codes
and reasons the relay passes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin, Subprotocol
from yarl import URL

from edge.config import UpstreamSettings
from edge.gateway.context import AuthState, auth_of, resolution_of
from edge.gateway.forwarding.headers import end_to_end as end_to_end
from edge.gateway.forwarding.headers import forwarding_headers as forwarding_headers
from edge.gateway.forwarding.headers import (
    hostname_of,
    identity_headers,
    request_headers,
    response_headers,
)
from edge.gateway.guard import authenticate_http, denial_response
from edge.gateway.origins import origin_allowed
from edge.pairing.denials import Denial

if TYPE_CHECKING:
    from starlette.datastructures import URLPath

    from edge.gateway.runtime import Gateway

logger = logging.getLogger("edge.upstream")

# The WebSocket client library writes these itself for the upstream handshake.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        b"host",
        b"origin",
        b"user-agent",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"sec-websocket-key",
        b"sec-websocket-protocol",
        b"sec-websocket-version",
    }
)
# aiohttp adds these unless told not to; the upstream should see only what the client sent.
NOT_ADDED = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
WEBSOCKET_MAX_MESSAGE = 16 * 1024 * 1024
MAX_CONNECTIONS = 512
KEEPALIVE_EXPIRY = 4.0  # below uvicorn's 5 s keep-alive, so Edge lets go of an idle one first
MAX_HEADER_LINE = 64 * 1024  # long Set-Cookie and CSP lines are real; aiohttp's default is 8 KiB
READ_SIZE = 64 * 1024
# A request target is forwarded byte for byte, so it must be visible ASCII.
_FORWARDABLE_TARGET = re.compile(rb"[\x21-\x7e]*")
# Close codes that may not appear in a close frame, and what to send instead.
_UNSENDABLE_CLOSE = {1005: 1000, 1006: 1014, 1015: 1014}


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class _UnsendableHeader(Exception):
    """A request header value aiohttp could not send byte for byte."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _text_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Headers as aiohttp takes them: it writes values as UTF-8, so only UTF-8 round-trips."""
    text: list[tuple[str, str]] = []
    for name, value in headers:
        try:
            text.append((name.decode("latin-1"), value.decode("utf-8")))
        except UnicodeDecodeError:
            raise _UnsendableHeader(name.decode("latin-1")) from None
    return text


def upstream_session(
    upstream: UpstreamSettings, *, max_connections: int = MAX_CONNECTIONS
) -> aiohttp.ClientSession:
    """The pooled client for one upstream, on the running event loop.

    ``timeout`` bounds each wait for the next bytes of the upstream's answer
    (the upload is bounded by the caller: ``_RequestBody``) and
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


def upstream_request_headers(
    scope: Scope, auth: AuthState, *, drop: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """The client's headers under the header policy, plus Edge's forwarding and identity ones."""
    authenticated_by_bearer = auth.state == "paired" and any(
        name == b"authorization" and value[:7].lower() == b"bearer "
        for name, value in scope["headers"]
    )
    return request_headers(
        scope["headers"],
        forwarding=forwarding_headers(resolution_of(scope)),
        identity=identity_headers(auth),
        drop_authorization=authenticated_by_bearer,
        drop=drop,
    )


def _json_body(error: str, detail: str) -> bytes:
    return json.dumps({"error": error, "detail": detail}).encode()


class UpstreamRoute(BaseRoute):
    """Every path under one upstream's prefix, HTTP and (if enabled) WebSocket.

    An upstream with a ``host`` takes every request for that host, WebSocket
    ones too (refused when ``websocket`` is off), so none of Edge's own
    routes is reachable on an app's origin.
    """

    def __init__(self, gateway: Gateway, upstream: UpstreamSettings) -> None:
        self.gateway = gateway
        self.upstream = upstream
        self.host = upstream.host
        self.prefix = upstream.path_prefix
        self.base = URL(upstream.url)
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        gateway.on_stop(self.aclose)

    # -- routing ---------------------------------------------------------------------

    def covers(self, path: str) -> bool:
        """Whether ``path`` is this upstream's: under its prefix, or the prefix minus its slash."""
        return path.startswith(self.prefix) or path == self.prefix[:-1]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        kind = scope["type"]
        if self.host is not None:
            if kind not in ("http", "websocket") or not self.covers(scope["path"]):
                return Match.NONE, {}
            if hostname_of(resolution_of(scope).host) != self.host:
                return Match.NONE, {}
            return Match.FULL, {}
        forwards = kind == "http" or (kind == "websocket" and self.upstream.websocket)
        if forwards and self.covers(scope["path"]):
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if not self.upstream.websocket:
                if (await receive())["type"] == "websocket.connect":
                    body = _json_body(
                        "not_found",
                        f"upstream {self.upstream.label!r} does not take WebSockets; "
                        "set upstreams[].websocket: true to forward them",
                    )
                    await _deny_websocket(scope, send, 404, [], body, 1008, "not found")
                return
            await self._websocket(scope, receive, send)
        elif scope["path"] == self.prefix[:-1]:
            query = scope.get("query_string", b"")
            location = self.prefix.encode() + (b"?" + query if query else b"")
            await _send_simple(send, 308, b"", [(b"location", location)])
        else:
            await self._http(scope, receive, send)

    # -- the pooled client -----------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """This event loop's pooled client (a test client may run several loops in turn)."""
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

    # -- paths -----------------------------------------------------------------------

    def _target(self, scope: Scope) -> tuple[str, str] | None:
        """The raw path and query (still percent-encoded) to ask the upstream for.

        ``None`` when they hold bytes that cannot go on a request line.
        """
        path: str = scope["path"]
        raw: bytes = scope.get("raw_path") or quote(path).encode("ascii")
        query: bytes = scope.get("query_string", b"")
        prefix = self.prefix.encode("ascii")
        if self.upstream.strip_prefix:
            if raw.startswith(prefix):
                raw = raw[len(prefix) - 1 :]
            else:  # the client percent-encoded part of the prefix
                raw = quote(path[len(self.prefix) - 1 :]).encode("ascii")
        if not (_FORWARDABLE_TARGET.fullmatch(raw) and _FORWARDABLE_TARGET.fullmatch(query)):
            return None
        base_path = self.base.raw_path.rstrip("/")
        return (base_path + raw.decode("ascii")) or "/", query.decode("ascii")

    def _url(self, scheme: str, target: tuple[str, str]) -> URL:
        path, query = target
        return URL.build(
            scheme=scheme,
            authority=self.base.raw_authority,
            path=path,
            query_string=query,
            encoded=True,
        )

    def _rewrite_location(self, value: bytes) -> bytes:
        """An absolute redirect to the upstream itself becomes a path on the gateway."""
        base = self.upstream.url.encode("latin-1")
        if not value.startswith(base) or value[len(base) : len(base) + 1] not in (b"", b"/", b"?"):
            return value
        rest = value[len(base) :]
        if not rest.startswith(b"/"):
            rest = b"/" + rest
        if self.upstream.strip_prefix:
            rest = self.prefix[:-1].encode("ascii") + rest
        return rest

    # -- HTTP ------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope)
        if target is None:
            await _send_json(send, 400, "bad_request", "the request path cannot be forwarded")
            return
        try:
            headers = _text_headers(upstream_request_headers(scope, auth_of(scope)))
        except _UnsendableHeader as exc:
            await _send_json(
                send,
                400,
                "bad_request",
                f"header {exc.name!r} is not UTF-8 and cannot be forwarded unchanged",
            )
            return
        body = _RequestBody(receive, self.upstream.timeout)
        if not _has_body(scope["headers"]):
            body.finished.set()
        label = self.upstream.label
        metrics = self.gateway.metrics
        started = time.perf_counter()
        try:
            async with asyncio.timeout(None) as body.deadline:
                response = await self.session().request(
                    scope["method"],
                    self._url(self.base.scheme, target),
                    headers=headers,
                    data=None if body.finished.is_set() else body.chunks(),
                    allow_redirects=False,
                )
        except TimeoutError as exc:
            if body.client_gone:
                return
            metrics.upstream(label, 504, time.perf_counter() - started)
            self._warn("timeout", exc)
            await _send_json(
                send,
                504,
                "upstream_timeout",
                f"upstream {label!r} did not answer in time ({type(exc).__name__})",
            )
            return
        except aiohttp.ClientError as exc:
            if body.client_gone:
                return
            metrics.upstream(label, 502, time.perf_counter() - started)
            self._warn("unreachable", exc)
            await _send_json(
                send,
                502,
                "bad_gateway",
                f"upstream {label!r} is unreachable or answered badly ({type(exc).__name__})",
            )
            return
        finally:
            body.deadline = None
        metrics.upstream(label, response.status, time.perf_counter() - started)
        try:
            await self._relay_response(response, body, receive, send)
        finally:
            # aiohttp pooled the connection already if the body was read whole;
            # after a partial read it cannot be reused, and this closes it.
            response.close()

    async def _relay_response(
        self, response: aiohttp.ClientResponse, body: _RequestBody, receive: Receive, send: Send
    ) -> None:
        headers = []
        for name, value in response_headers(
            response.raw_headers,
            on_control_origin=self.upstream.on_control_origin,
            sandbox=self.upstream.sandbox,
        ):
            if name in (b"location", b"content-location"):
                value = self._rewrite_location(value)
            headers.append((name, value))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        relay = asyncio.ensure_future(_relay_body(response, send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive, body.finished))
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
                    self._warn("broke off mid-body", exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        advice = {
            "timeout": "raise upstreams[].timeout (or connect_timeout) if it is just slow",
            "unreachable": "check that it is running and that upstreams[].url is right",
        }.get(what, "check the upstream's own log")
        self.gateway.warner.warn(
            f"upstream:{self.upstream.label}:{what}",
            f"upstream {self.upstream.label!r} ({self.upstream.url}) {what}: "
            f"{type(exc).__name__}: {exc}; {advice}",
            upstream=self.upstream.label,
        )

    # -- WebSocket -------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if (await receive())["type"] != "websocket.connect":
            return
        gateway = self.gateway
        metrics = gateway.metrics
        resolution = resolution_of(scope)
        origin = _header(scope, b"origin")
        auth = authenticate_http(gateway, scope)
        if not origin_allowed(origin, resolution, gateway.live.allowed_origins):
            metrics.auth_failure(Denial.ORIGIN_NOT_ALLOWED.metric_label)
            metrics.observe_request("websocket", "denied", time.perf_counter() - started)
            body = _json_body("forbidden", f"origin {origin!r} may not open this socket")
            await _deny_websocket(scope, send, 403, [], body, 1008, "origin not allowed")
            return
        if auth.state == "anonymous":
            denial = auth.denial or Denial.CREDENTIALS_MISSING
            metrics.auth_failure(denial.metric_label)
            metrics.observe_request("websocket", "denied", time.perf_counter() - started)
            status, headers, body = denial_response(auth)
            await _deny_websocket(scope, send, status, headers, body, 1008, denial.reason)
            return
        label = self.upstream.label
        target = self._target(scope)
        if target is None:
            body = _json_body("bad_request", "the request path cannot be forwarded")
            await _deny_websocket(scope, send, 400, [], body, 1008, "invalid request path")
            return
        connected = time.perf_counter()
        try:
            upstream = await connect(
                self._websocket_url(target),
                additional_headers=[
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in upstream_request_headers(
                        scope, auth, drop=WEBSOCKET_HANDSHAKE
                    )
                ],
                origin=Origin(origin) if origin is not None else None,
                user_agent_header=_header(scope, b"user-agent"),
                subprotocols=_subprotocols(scope),
                open_timeout=self.upstream.connect_timeout,
                max_size=WEBSOCKET_MAX_MESSAGE,
                proxy=None,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            metrics.upstream(label, status, time.perf_counter() - connected)
            body = _json_body("upstream_refused", f"upstream {label!r} answered {status}")
            await _deny_websocket(scope, send, status, [], body, 1014, "bad gateway")
            return
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            timed_out = isinstance(exc, TimeoutError)
            status = 504 if timed_out else 502
            metrics.upstream(label, status, time.perf_counter() - connected)
            self._warn("timeout" if timed_out else "unreachable", exc)
            error = "upstream_timeout" if timed_out else "bad_gateway"
            detail = f"upstream {label!r} WebSocket failed ({type(exc).__name__})"
            await _deny_websocket(
                scope, send, status, [], _json_body(error, detail), 1014, "bad gateway"
            )
            return
        metrics.upstream(label, 101, time.perf_counter() - connected)
        metrics.observe_request("websocket", auth.state, time.perf_counter() - started)
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await _relay_websocket(upstream, receive, send)
        finally:
            await upstream.close()

    def _websocket_url(self, target: tuple[str, str]) -> str:
        return str(self._url("wss" if self.base.scheme == "https" else "ws", target))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _subprotocols(scope: Scope) -> list[Subprotocol] | None:
    offered = [
        Subprotocol(token.strip())
        for key, value in scope["headers"]
        if key == b"sec-websocket-protocol"
        for token in value.decode("latin-1").split(",")
        if token.strip()
    ]
    return offered or None


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class _RequestBody:
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
                    raise _ClientGone
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


async def _relay_body(response: aiohttp.ClientResponse, send: Send) -> None:
    async for chunk in response.content.iter_chunked(READ_SIZE):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive: Receive, body_read: asyncio.Event) -> None:
    """Until the client disconnects; ``receive`` is the body's until all of it is read."""
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_simple(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [(b"content-length", str(len(body)).encode("ascii")), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, error: str, detail: str) -> None:
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await _send_simple(send, status, _json_body(error, detail), headers)


async def _deny_websocket(
    scope: Scope,
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    close_code: int,
    close_reason: str,
) -> None:
    """An HTTP answer to the handshake where the server can send one, else accept and close.

    Closing before accepting would reach the client as a bare 403 with no reason.
    The client's ``websocket.connect`` message has been received already.
    """
    if "websocket.http.response" in scope.get("extensions", {}):
        response_headers = [(k, v) for k, v in headers if k != b"content-type"]
        response_headers.append((b"content-type", b"application/json"))
        response_headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send(
            {"type": "websocket.http.response.start", "status": status, "headers": response_headers}
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": close_code, "reason": close_reason})


def _sendable(code: int | None) -> int:
    if code is None:
        return 1000
    return _UNSENDABLE_CLOSE.get(code, code)


async def _relay_websocket(upstream: ClientConnection, receive: Receive, send: Send) -> None:
    """Frames both ways until one side closes; its close code and reason go to the other."""

    async def client_to_upstream() -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                code = _sendable(message.get("code", 1000))
                await upstream.close(1001 if code == 1014 else code, message.get("reason") or "")
                return

    async def upstream_to_client() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        code = upstream.close_code
        reason = upstream.close_reason or ""
        if code == 1006:
            reason = "upstream connection lost"
        await send({"type": "websocket.close", "code": _sendable(code), "reason": reason})

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await task


def build_upstream_routes(gateway: Gateway) -> list[BaseRoute]:
    """One route per path-prefix upstream, longest prefix first so nested prefixes work."""
    upstreams = [u for u in gateway.settings.upstreams if u.host is None]
    upstreams.sort(key=lambda u: len(u.path_prefix), reverse=True)
    return [UpstreamRoute(gateway, upstream) for upstream in upstreams]


def build_host_routes(gateway: Gateway) -> list[BaseRoute]:
    """One route per upstream on a host of its own; they go before all of Edge's routes."""
    upstreams = [u for u in gateway.settings.upstreams if u.host is not None]
    upstreams.sort(key=lambda u: len(u.path_prefix), reverse=True)
    return [UpstreamRoute(gateway, upstream) for upstream in upstreams]
