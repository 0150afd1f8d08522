"""``create_app(config)``: the ASGI app. The one place that wires; behaviour lives in the layers.

Each component takes what it uses as arguments: the reloadable configuration
(``Live``), the pairing service, the metrics, the blocking door. They are made
here, once per app, and nowhere else; ``Gateway`` runs their lifecycle.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from edge import __version__, heads
from edge.config import Settings, load_settings
from edge.config.policies import build_pairing_policy
from edge.diagnostics import Diagnostics
from edge.gateway.api import build_routes
from edge.gateway.blocking import Blocking
from edge.gateway.dashboard import index_app, static_app
from edge.gateway.forward_auth import build_forward_auth_routes
from edge.gateway.forwarding.paths import PathNormalisationMiddleware
from edge.gateway.guard import Authenticator, ClientResolutionMiddleware, GuardMiddleware
from edge.gateway.health import StoreHealth
from edge.gateway.live import Live
from edge.gateway.notify import Notifier
from edge.gateway.observe import DiagnosticsMiddleware, ObservedMetrics
from edge.gateway.request_id import RequestIdMiddleware
from edge.gateway.routing import SkippingRouter
from edge.gateway.runtime import Gateway
from edge.gateway.sockets import SocketHub
from edge.gateway.upstream import build_host_routes, build_upstream_routes
from edge.gateway.ws import ControlSocket
from edge.gateway_token import load_gateway_token
from edge.logs import SignalWarner, setup_logging
from edge.pairing.service import PairingService
from edge.pairing.store import Store, open_store

UI_DIR = Path(__file__).parent / "ui"


def build_gateway(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
) -> Gateway:
    """The components of one app and the ``Gateway`` that runs them (no routes yet).

    ``clock`` is the pairing service's wall clock (tests move it to expire things).
    """
    setup_logging(settings.logging)
    live = Live(settings)
    token = load_gateway_token(settings, create=True)
    store = store or open_store(settings.store.url, settings.data_dir)
    service = PairingService(store, token.value, build_pairing_policy(settings), clock=clock)
    diagnostics = Diagnostics(settings.data_dir)
    metrics = ObservedMetrics(__version__, diagnostics)
    blocking = Blocking()
    hub = SocketHub(
        client_key=service.client_key,
        store=store,
        blocking=blocking,
        gauge=metrics.websockets,
    )
    notifier = Notifier.for_store(
        settings.notify,
        store,
        metrics.registry,
        blocking=blocking,
        data_dir=settings.data_dir,
        public_url=lambda: live.settings.server.public_url,
    )
    return Gateway(
        live=live,
        store=store,
        service=service,
        metrics=metrics,
        blocking=blocking,
        health=StoreHealth(store, metrics.store_up),
        hub=hub,
        notifier=notifier,
        warner=SignalWarner(logging.getLogger("edge.proxy")),
        diagnostics=diagnostics,
    )


def create_app(
    config: str | os.PathLike[str] | Mapping[str, Any] | Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The gateway as an ASGI app, from a YAML path, a mapping of the same shape, or settings."""
    settings = config if isinstance(config, Settings) else load_settings(config)
    gateway = build_gateway(settings, clock=clock)
    live, metrics = gateway.live, gateway.metrics
    # The server's protocol (edge serve) bounds request heads with these, and counts here.
    heads.configure(heads.HeadLimits.from_settings(settings))
    heads.on_refused(lambda reason: metrics.request_heads_refused.labels(reason).inc())
    authenticate = Authenticator(gateway.service, gateway.blocking)
    host_routes = build_host_routes(
        settings, authenticate=authenticate, live=live, metrics=metrics, warner=gateway.warner
    )
    prefix_routes = build_upstream_routes(
        settings, authenticate=authenticate, live=live, metrics=metrics, warner=gateway.warner
    )
    for upstream in (*host_routes, *prefix_routes):
        gateway.on_stop(upstream.aclose)

    control_socket = ControlSocket(
        live=live,
        service=gateway.service,
        hub=gateway.hub,
        metrics=metrics,
        blocking=gateway.blocking,
    )
    routes: list[BaseRoute] = [
        *host_routes,  # an app's own host reaches none of Edge's routes
        Route("/", index_app(UI_DIR), methods=["GET", "HEAD"]),
        WebSocketRoute("/ws", control_socket),
        *build_routes(
            settings=settings,
            live=live,
            service=gateway.service,
            health=gateway.health,
            metrics=metrics,
            blocking=gateway.blocking,
            diagnostics=gateway.diagnostics,
        ),
        # Forward-auth endpoints (``/auth/...``) and upstream forwarding (``upstreams``).
        *build_forward_auth_routes(authenticate=authenticate, live=live, metrics=metrics),
        *prefix_routes,
    ]
    if UI_DIR.is_dir():
        routes.append(Mount("/ui", app=static_app(UI_DIR), name="ui"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        middleware=[
            Middleware(
                PathNormalisationMiddleware,
                prefixes=[u.path_prefix for u in settings.upstreams if u.host is None],
            ),
            Middleware(
                ClientResolutionMiddleware, live=live, metrics=metrics, warner=gateway.warner
            ),
            Middleware(RequestIdMiddleware),
            Middleware(
                DiagnosticsMiddleware, diagnostics=gateway.diagnostics, blocking=gateway.blocking
            ),
            Middleware(
                GuardMiddleware,
                authenticate=authenticate,
                live=live,
                metrics=metrics,
                settings=settings,
            ),
        ],
        lifespan=lifespan,
    )
    app.router = SkippingRouter(routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and worker processes: config from ``$EDGE_CONFIG``."""
    return create_app(None)
