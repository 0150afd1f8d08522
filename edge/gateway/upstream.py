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

This module routes and orchestrates; the pooled HTTP client and body relay
live in ``edge.gateway.forwarding.http``, the WebSocket relay in
``edge.gateway.forwarding.websocket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Origin
from yarl import URL

from edge.config import Settings, UpstreamSettings
from edge.gateway.context import AuthState, auth_of, resolution_of
from edge.gateway.forwarding.headers import end_to_end as end_to_end
from edge.gateway.forwarding.headers import forwarding_headers as forwarding_headers
from edge.gateway.forwarding.headers import (
    hostname_of,
    identity_headers,
    request_headers,
    response_headers,
)
from edge.gateway.forwarding.http import (
    RequestBody,
    UnsendableHeader,
    has_body,
    json_body,
    relay_body,
    send_json,
    send_simple,
    text_headers,
    wait_disconnect,
)
from edge.gateway.forwarding.http import upstream_session as upstream_session
from edge.gateway.forwarding.websocket import (
    WEBSOCKET_HANDSHAKE,
    WEBSOCKET_MAX_MESSAGE,
    deny_websocket,
    relay_websocket,
    subprotocols,
)
from edge.gateway.guard import Authenticator, denial_response
from edge.gateway.live import Live
from edge.gateway.origins import origin_allowed
from edge.logs import SignalWarner
from edge.metrics import Metrics
from edge.pairing.denials import Denial

if TYPE_CHECKING:
    from starlette.datastructures import URLPath

logger = logging.getLogger("edge.upstream")

# A request target is forwarded byte for byte, so it must be visible ASCII.
_FORWARDABLE_TARGET = re.compile(rb"[\x21-\x7e]*")


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


class UpstreamRoute(BaseRoute):
    """Every path under one upstream's prefix, HTTP and (if enabled) WebSocket.

    An upstream with a ``host`` takes every request for that host, WebSocket
    ones too (refused when ``websocket`` is off), so none of Edge's own
    routes is reachable on an app's origin.
    """

    def __init__(
        self,
        upstream: UpstreamSettings,
        *,
        authenticate: Authenticator,
        live: Live,
        metrics: Metrics,
        warner: SignalWarner,
    ) -> None:
        self.authenticate = authenticate
        self.live = live
        self.metrics = metrics
        self.warner = warner
        self.upstream = upstream
        self.host = upstream.host
        self.prefix = upstream.path_prefix
        self.base = URL(upstream.url)
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

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
                    body = json_body(
                        "not_found",
                        f"upstream {self.upstream.label!r} does not take WebSockets; "
                        "set upstreams[].websocket: true to forward them",
                    )
                    await deny_websocket(scope, send, 404, [], body, 1008, "not found")
                return
            await self._websocket(scope, receive, send)
        elif scope["path"] == self.prefix[:-1]:
            query = scope.get("query_string", b"")
            location = self.prefix.encode() + (b"?" + query if query else b"")
            await send_simple(send, 308, b"", [(b"location", location)])
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
            await send_json(send, 400, "bad_request", "the request path cannot be forwarded")
            return
        try:
            headers = text_headers(upstream_request_headers(scope, auth_of(scope)))
        except UnsendableHeader as exc:
            await send_json(
                send,
                400,
                "bad_request",
                f"header {exc.name!r} is not UTF-8 and cannot be forwarded unchanged",
            )
            return
        body = RequestBody(receive, self.upstream.timeout)
        if not has_body(scope["headers"]):
            body.finished.set()
        label = self.upstream.label
        metrics = self.metrics
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
            await send_json(
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
            await send_json(
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
        self, response: aiohttp.ClientResponse, body: RequestBody, receive: Receive, send: Send
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
                    self._warn("broke off mid-body", exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        advice = {
            "timeout": "raise upstreams[].timeout (or connect_timeout) if it is just slow",
            "unreachable": "check that it is running and that upstreams[].url is right",
        }.get(what, "check the upstream's own log")
        self.warner.warn(
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
        metrics = self.metrics
        resolution = resolution_of(scope)
        origin = _header(scope, b"origin")
        auth = await self.authenticate(scope)
        if not origin_allowed(origin, resolution, self.live.config.allowed_origins):
            metrics.auth_failure(Denial.ORIGIN_NOT_ALLOWED.metric_label)
            metrics.observe_request("websocket", "denied", time.perf_counter() - started)
            body = json_body("forbidden", f"origin {origin!r} may not open this socket")
            await deny_websocket(scope, send, 403, [], body, 1008, "origin not allowed")
            return
        if auth.state == "anonymous":
            denial = auth.denial or Denial.CREDENTIALS_MISSING
            metrics.auth_failure(denial.metric_label)
            metrics.observe_request("websocket", "denied", time.perf_counter() - started)
            status, headers, body = denial_response(auth)
            await deny_websocket(scope, send, status, headers, body, 1008, denial.reason)
            return
        label = self.upstream.label
        target = self._target(scope)
        if target is None:
            body = json_body("bad_request", "the request path cannot be forwarded")
            await deny_websocket(scope, send, 400, [], body, 1008, "invalid request path")
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
                subprotocols=subprotocols(scope),
                open_timeout=self.upstream.connect_timeout,
                max_size=WEBSOCKET_MAX_MESSAGE,
                proxy=None,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            metrics.upstream(label, status, time.perf_counter() - connected)
            body = json_body("upstream_refused", f"upstream {label!r} answered {status}")
            await deny_websocket(scope, send, status, [], body, 1014, "bad gateway")
            return
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            timed_out = isinstance(exc, TimeoutError)
            status = 504 if timed_out else 502
            metrics.upstream(label, status, time.perf_counter() - connected)
            self._warn("timeout" if timed_out else "unreachable", exc)
            error = "upstream_timeout" if timed_out else "bad_gateway"
            detail = f"upstream {label!r} WebSocket failed ({type(exc).__name__})"
            await deny_websocket(
                scope, send, status, [], json_body(error, detail), 1014, "bad gateway"
            )
            return
        metrics.upstream(label, 101, time.perf_counter() - connected)
        metrics.observe_request("websocket", auth.state, time.perf_counter() - started)
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await relay_websocket(upstream, receive, send)
        finally:
            await upstream.close()

    def _websocket_url(self, target: tuple[str, str]) -> str:
        return str(self._url("wss" if self.base.scheme == "https" else "ws", target))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def build_upstream_routes(
    settings: Settings,
    *,
    authenticate: Authenticator,
    live: Live,
    metrics: Metrics,
    warner: SignalWarner,
) -> list[UpstreamRoute]:
    """One route per path-prefix upstream, longest prefix first so nested prefixes work."""
    upstreams = [u for u in settings.upstreams if u.host is None]
    upstreams.sort(key=lambda u: len(u.path_prefix), reverse=True)
    return [
        UpstreamRoute(u, authenticate=authenticate, live=live, metrics=metrics, warner=warner)
        for u in upstreams
    ]


def build_host_routes(
    settings: Settings,
    *,
    authenticate: Authenticator,
    live: Live,
    metrics: Metrics,
    warner: SignalWarner,
) -> list[UpstreamRoute]:
    """One route per upstream on a host of its own; they go before all of Edge's routes."""
    upstreams = [u for u in settings.upstreams if u.host is not None]
    upstreams.sort(key=lambda u: len(u.path_prefix), reverse=True)
    return [
        UpstreamRoute(u, authenticate=authenticate, live=live, metrics=metrics, warner=warner)
        for u in upstreams
    ]
