"""``ClientResolutionMiddleware``: who is really asking, resolved once per HTTP or WebSocket scope.

It resolves the real client (``edge.net.resolve``), rewrites
``scope["client"]`` and ``scope["scheme"]`` to the resolved values, leaves
the full resolution in the scope for every later layer, counts the
proxy-header outcome and warns (rate-limited) about anomalies.

Under ``edge serve`` each connection carries its ``Connection`` memo
(``edge.gateway.protocols``): a request that repeats the previous request's
header bytes on the same keep-alive connection, under the same policy, peer,
scheme and scope type, reuses that resolution, found by one comparison of
the raw header list instead of a walk. A reload makes a new policy, so the
next request resolves again.

``__call__`` is a plain method that returns the next app's awaitable: all of
its work is synchronous, and a coroutine of its own per request would cost
more than that work on a repeated request.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Receive, Scope, Send

from edge.gateway.context import CONNECTION_KEY, PEER_OWNER_KEY, RESOLUTION_KEY, Connection
from edge.gateway.live import Live
from edge.logs import SignalWarner
from edge.metrics import Metrics
from edge.net import NOT_LOOKED_UP, PeerOwner, resolve
from edge.net.explain import ANOMALY_ADVICE


class ClientResolutionMiddleware:
    def __init__(self, app: ASGIApp, *, live: Live, metrics: Metrics, warner: SignalWarner) -> None:
        self.app = app
        self.live = live
        self.metrics = metrics
        self.warner = warner

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            return self.app(scope, receive, send)
        policy = self.live.config.policy
        headers = scope["headers"]
        peer = scope.get("client")
        scheme = scope.get("scheme", "http")
        connection = scope.get(CONNECTION_KEY)
        last = connection.last if isinstance(connection, Connection) else None
        if (
            last is not None
            and last[0] is policy
            and last[1] == headers
            and last[2] == peer
            and last[3] == scheme
            and last[4] == kind
        ):
            resolution = last[5]  # the connection's previous request, byte for byte
        else:
            owner = scope.get(PEER_OWNER_KEY)
            resolution = resolve(
                peer,
                headers,
                policy,
                scheme=scheme,
                websocket=kind == "websocket",
                peer_owner=owner if isinstance(owner, PeerOwner) else NOT_LOOKED_UP,
            )
            if kind == "http" and isinstance(connection, Connection):
                # (a WebSocket connection has one handshake: nothing to repeat)
                connection.last = (policy, list(headers), peer, scheme, kind, resolution)
        scope[RESOLUTION_KEY] = resolution
        if resolution.client_ip is not None:
            scope["client"] = (resolution.client_ip, resolution.client_port or 0)
        scope["scheme"] = resolution.scheme
        self.metrics.proxy_outcome(resolution.proxy_outcome)
        if resolution.anomalies:
            anomaly = resolution.anomalies[0]
            self.warner.warn(
                f"{anomaly}:{resolution.peer_ip}",
                ANOMALY_ADVICE[anomaly].format(
                    peer=resolution.peer_ip or "unix socket",
                    header=resolution.header_used or "forwarding header",
                ),
                anomaly=anomaly,
                peer=resolution.peer_ip,
            )
        return self.app(scope, receive, send)
