"""Routing to the configured ``upstreams``: which route takes a request, and which relay serves it.

A request under an upstream's prefix (or on its host) reaches its route only
once the guard has admitted it (HTTP) or, for WebSockets, which the guard
middleware passes through, once ``admit_websocket`` has judged the same
credentials and the Origin. The route then hands it to a relay:
``forwarding.http`` (the pooled client) or ``forwarding.websocket``. What the
upstream sees, headers and path, is decided by ``forwarding.headers`` and
``forwarding.paths``; how a refusal is worded, by ``edge.refusals``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from edge.config import Settings, UpstreamSettings
from edge.gateway.answers import refuse_websocket
from edge.gateway.context import resolution_of
from edge.gateway.forwarding.headers import hostname_of
from edge.gateway.forwarding.http import SessionPool, forward_http, send_simple
from edge.gateway.forwarding.paths import UpstreamPaths
from edge.gateway.forwarding.websocket import forward_websocket
from edge.gateway.guard import Authenticator, admit_websocket
from edge.gateway.live import Live
from edge.logs import SignalWarner
from edge.metrics import Metrics
from edge.refusals import Rejection

if TYPE_CHECKING:
    from starlette.datastructures import URLPath


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
        self.paths = UpstreamPaths.of(upstream)
        self.pool = SessionPool(upstream)

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
            await self._websocket(scope, receive, send)
        elif scope["path"] == self.prefix[:-1]:
            query = scope.get("query_string", b"")
            location = self.prefix.encode() + (b"?" + query if query else b"")
            await send_simple(send, 308, b"", [(b"location", location)])
        else:
            await forward_http(
                scope,
                receive,
                send,
                upstream=self.upstream,
                paths=self.paths,
                pool=self.pool,
                observe=self._observe,
                warn=self._warn,
            )

    async def aclose(self) -> None:
        """Close this event loop's pooled connections."""
        await self.pool.aclose()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if (await receive())["type"] != "websocket.connect":
            return
        if not self.upstream.websocket:
            detail = (
                f"upstream {self.upstream.label!r} does not take WebSockets; "
                "set upstreams[].websocket: true to forward them"
            )
            await refuse_websocket(scope, send, Rejection.WEBSOCKET_NOT_FORWARDED, detail)
            return
        auth = await admit_websocket(
            scope,
            send,
            started,
            authenticate=self.authenticate,
            live=self.live,
            metrics=self.metrics,
        )
        if auth is None:
            return

        def opened() -> None:
            elapsed = time.perf_counter() - started
            self.metrics.observe_request("websocket", auth.state, elapsed)

        await forward_websocket(
            scope,
            receive,
            send,
            upstream=self.upstream,
            paths=self.paths,
            auth=auth,
            observe=self._observe,
            warn=self._warn,
            opened=opened,
        )

    def _observe(self, status: int, seconds: float) -> None:
        self.metrics.upstream(self.upstream.label, status, seconds)

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


def build_upstream_routes(
    settings: Settings,
    *,
    authenticate: Authenticator,
    live: Live,
    metrics: Metrics,
    warner: SignalWarner,
) -> list[UpstreamRoute]:
    """One route per path-prefix upstream, longest prefix first so nested prefixes work."""
    chosen = [u for u in settings.upstreams if u.host is None]
    return _routes(chosen, authenticate=authenticate, live=live, metrics=metrics, warner=warner)


def build_host_routes(
    settings: Settings,
    *,
    authenticate: Authenticator,
    live: Live,
    metrics: Metrics,
    warner: SignalWarner,
) -> list[UpstreamRoute]:
    """One route per upstream on a host of its own; they go before all of Edge's routes."""
    chosen = [u for u in settings.upstreams if u.host is not None]
    return _routes(chosen, authenticate=authenticate, live=live, metrics=metrics, warner=warner)


def _routes(
    upstreams: list[UpstreamSettings],
    *,
    authenticate: Authenticator,
    live: Live,
    metrics: Metrics,
    warner: SignalWarner,
) -> list[UpstreamRoute]:
    """Longest prefix first, so a nested prefix takes its requests before its parent."""
    ordered = sorted(upstreams, key=lambda u: len(u.path_prefix), reverse=True)
    return [
        UpstreamRoute(u, authenticate=authenticate, live=live, metrics=metrics, warner=warner)
        for u in ordered
    ]
