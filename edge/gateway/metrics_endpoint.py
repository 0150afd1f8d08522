"""``GET /metrics``: who may scrape, on the gateway's port or on a listener of its own.

Both places answer with the same endpoint and the same rule: local clients,
``metrics.allowed_networks``, or the holder of ``metrics.bearer_token``; a
device token does not open it. On the gateway's port the client was resolved
by ``ClientResolutionMiddleware``; the dedicated listener (``metrics.port``)
runs in the ``edge serve`` process, outside the workers, so it resolves the
client itself (trusting no proxy: scrapers reach it directly) and renders what
every worker wrote.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.config import Settings
from edge.gateway.context import PEER_OWNER_KEY, RESOLUTION_KEY
from edge.gateway.guard import _bearer
from edge.gateway.runtime import LiveConfig, live_config
from edge.metrics import render_exposition
from edge.net import NOT_LOOKED_UP, PeerOwner, Resolution, resolve
from edge.net.address import parse_ip
from edge.pairing.tokens import secrets_equal

Renderer = Callable[[], tuple[bytes, str]]


def metrics_allowed(live: LiveConfig, resolution: Resolution, scope: Any) -> bool:
    """Local clients, ``metrics.allowed_networks``, or ``metrics.bearer_token``."""
    if resolution.local:
        return True
    ip = parse_ip(resolution.client_ip) if resolution.client_ip else None
    if ip is not None and ip in live.metrics_networks:
        return True
    expected = live.settings.metrics.bearer_token
    presented = _bearer(scope)
    return bool(expected and presented and secrets_equal(presented, expected))


def _refusal() -> Response:
    return JSONResponse(
        {
            "error": "unauthorized",
            "reason": "metrics_forbidden",
            "detail": (
                "Metrics are served to local clients, to metrics.allowed_networks, and "
                "to holders of metrics.bearer_token (Authorization: Bearer <token>); "
                "device tokens do not open them."
            ),
        },
        status_code=401,
        headers={"www-authenticate": 'Bearer realm="edge-metrics"', "cache-control": "no-store"},
    )


def metrics_endpoint(
    live: Callable[[], LiveConfig], render: Renderer
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        config = live()
        resolution = request.scope.get(RESOLUTION_KEY)
        if not isinstance(resolution, Resolution):  # the dedicated listener
            owner = request.scope.get(PEER_OWNER_KEY)
            resolution = resolve(
                request.scope.get("client"),
                request.scope["headers"],
                config.policy,
                scheme=request.scope.get("scheme", "http"),
                peer_owner=owner if isinstance(owner, PeerOwner) else NOT_LOOKED_UP,
            )
        if not metrics_allowed(config, resolution, request.scope):
            return _refusal()
        data, content_type = render()
        return Response(data, headers={"content-type": content_type, "cache-control": "no-store"})

    return endpoint


def listener_app(settings: Settings) -> Starlette:
    """The app of the dedicated listener: ``metrics.path`` and nothing else.

    Its access rules are read once, at start; ``edge gateway reload`` reaches
    the workers, not this listener.
    """
    # Scrapers talk to the listener directly: no peer there may name another client.
    direct = settings.model_copy(
        update={"proxy": settings.proxy.model_copy(update={"trusted_proxies": []})}
    )
    live = live_config(direct)
    endpoint = metrics_endpoint(lambda: live, render_exposition)
    return Starlette(routes=[Route(settings.metrics.path, endpoint)])


def bind_listener(settings: Settings) -> socket.socket:
    """The listening socket of ``metrics.host:metrics.port``; OSError when it cannot be had."""
    host, port = settings.metrics.host, settings.metrics.port
    assert port is not None
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve_listener(
    settings: Settings, sock: socket.socket, uvicorn_settings: Mapping[str, object]
) -> threading.Thread:
    """Serve ``listener_app`` on ``sock`` from a daemon thread of this process.

    ``uvicorn_settings`` are the ones ``edge serve`` runs the gateway with.
    """
    import uvicorn

    from edge.gateway.protocols import HTTP_PROTOCOL

    config = uvicorn.Config(
        listener_app(settings),
        log_level=settings.logging.level,
        lifespan="off",
        http=HTTP_PROTOCOL,  # a local scraper is local here too: its owner is looked up
        **uvicorn_settings,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="edge-metrics-listener", daemon=True
    )
    thread.start()
    return thread
