"""``create_app(config)``: build the ASGI app. Wiring only; behaviour lives in the layers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from edge import heads
from edge.config import Settings, load_settings
from edge.gateway.api import build_routes
from edge.gateway.dashboard import index_app, static_app
from edge.gateway.forward_auth import build_forward_auth_routes
from edge.gateway.forwarding.paths import PathNormalisationMiddleware
from edge.gateway.guard import ClientResolutionMiddleware, GuardMiddleware
from edge.gateway.routing import SkippingRouter
from edge.gateway.runtime import Gateway
from edge.gateway.upstream import build_host_routes, build_upstream_routes
from edge.gateway.ws import ControlSocket

UI_DIR = Path(__file__).parent / "ui"


def create_app(
    config: str | os.PathLike[str] | Mapping[str, Any] | Settings | None = None,
) -> Starlette:
    """The gateway as an ASGI app, from a YAML path, a mapping of the same shape, or settings."""
    settings = config if isinstance(config, Settings) else load_settings(config)
    gateway = Gateway(settings)
    # The server's protocol (edge serve) bounds request heads with these, and counts here.
    heads.configure(heads.HeadLimits.from_settings(settings))
    heads.on_refused(lambda reason: gateway.metrics.request_heads_refused.labels(reason).inc())

    routes: list[BaseRoute] = [
        *build_host_routes(gateway),  # an app's own host reaches none of Edge's routes
        Route("/", index_app(UI_DIR), methods=["GET", "HEAD"]),
        WebSocketRoute("/ws", ControlSocket(gateway)),
        *build_routes(gateway),
    ]
    routes.extend(_extension_routes(gateway))
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
            Middleware(ClientResolutionMiddleware, gateway=gateway),
            Middleware(GuardMiddleware, gateway=gateway),
        ],
        lifespan=lifespan,
    )
    app.router = SkippingRouter(routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app


def _extension_routes(gateway: Gateway) -> list[BaseRoute]:
    """Forward-auth endpoints (``/auth/...``) and upstream forwarding (``upstreams``)."""
    return [*build_forward_auth_routes(gateway), *build_upstream_routes(gateway)]


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and worker processes: config from ``$EDGE_CONFIG``."""
    return create_app(None)
