"""``SkippingRouter`` routes every request exactly as Starlette's own ``Router`` does.

Both routers get Edge's real route list (with nested upstream prefixes, one
of them forwarding WebSockets) and three routes after it that are shadowed
by earlier ones. Every route's ``handle`` is replaced by a
recorder, so a request yields either the route that would serve it or the
messages the router sent itself (405, redirect, 404). Paths are generated
around the real ones: exact, with a trailing slash, with a final newline,
under a prefix, with parameters, and random.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import BaseRoute, Route, Router

from edge import create_app
from edge.gateway.routing import SkippingRouter
from tests.conftest import base_config

Outcome = tuple[str, Any]


def edge_routes(tmp_path: Path) -> list[BaseRoute]:
    app = create_app(
        base_config(
            tmp_path,
            upstreams=[
                {"prefix": "/svc/", "share_control_origin": True, "url": "http://127.0.0.1:9", "websocket": True},
                {"prefix": "/svc/inner/", "share_control_origin": True, "url": "http://127.0.0.1:9", "name": "inner"},
                {"prefix": "/static/", "share_control_origin": True, "url": "http://127.0.0.1:9"},
            ],
        )
    )
    assert isinstance(app.router, SkippingRouter)
    return list(app.router.routes)


async def _endpoint(request: Any) -> None:
    raise AssertionError("handle is recorded, never run")


def record_handles(routes: list[BaseRoute]) -> list[Outcome]:
    handled: list[Outcome] = []
    for route in routes:

        async def handle(scope: Any, receive: Any, send: Any, route: BaseRoute = route) -> None:
            handled.append(("route", (id(route), scope.get("path_params"))))

        route.handle = handle  # type: ignore[method-assign]
    return handled


def route_with(router: Router, handled: list[Outcome], scope: dict[str, Any]) -> list[Outcome]:
    handled.clear()
    sent: list[Outcome] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(("sent", (message["type"], message.get("status"), message.get("headers"))))

    asyncio.run(router.app(dict(scope), receive, send))
    return [*handled, *sent]


KNOWN = [
    "/",
    "/ws",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/whoami",
    "/api/session",
    "/api/devices",
    "/api/invites",
    "/api/invites/abc",
    "/api/requests/r1/approve",
    "/api/devices/d1/revoke",
    "/auth/nginx",
    "/ui/app.js",
    "/ui",
    "/svc",
    "/svc/",
    "/svc/x",
    "/svc/inner",
    "/svc/inner/y",
    "/static/a/b",
    "/nowhere",
    "/svc/late",
    "/static",
]
paths = st.one_of(
    st.sampled_from(KNOWN),
    st.builds(
        lambda base, tail: base + tail,
        st.sampled_from(KNOWN),
        st.sampled_from(["/", "\n", "x", "/deeper", "%2F", "//"]),
    ),
    st.text(alphabet="/abcdefghijklmnopqrstuvwxyz\n.%{}", max_size=24).map(lambda t: "/" + t),
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[BaseRoute], list[Outcome]]:
    # After Edge's own: routes that only a router trying every route in order gets right.
    # An earlier upstream takes /svc/late and /static; the earlier /healthz takes
    # "/healthz\n" (a route's $ matches before a final newline), not the catch-all.
    late = [Route(path, _endpoint) for path in ("/svc/late", "/static", "/{name}")]
    routes = [*edge_routes(tmp_path_factory.mktemp("routes")), *late]
    return routes, record_handles(routes)


@settings(max_examples=400, deadline=None)
@given(
    path=paths,
    kind=st.sampled_from(["http", "websocket"]),
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD"]),
    root_path=st.sampled_from(["", "", "", "/svc"]),
)
def test_skipping_router_picks_what_starlette_picks(
    recorded: tuple[list[BaseRoute], list[Outcome]],
    path: str,
    kind: str,
    method: str,
    root_path: str,
) -> None:
    routes, handled = recorded
    scope: dict[str, Any] = {
        "type": kind,
        "path": root_path + path,
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"edge.example.com")],
        "scheme": "http" if kind == "http" else "ws",
        "server": ("edge.example.com", 80),
    }
    if kind == "http":
        scope["method"] = method
    assert route_with(SkippingRouter(routes), handled, scope) == route_with(
        Router(routes), handled, scope
    )


def test_a_literal_path_tries_only_the_routes_that_could_match_it(tmp_path: Path) -> None:
    routes = edge_routes(tmp_path)
    router = SkippingRouter(routes)
    healthz = router._candidates({"type": "http", "path": "/healthz", "root_path": ""})
    assert healthz is not None and [getattr(r, "path", None) for r in healthz] == ["/healthz"]
    forwarded = router._candidates({"type": "http", "path": "/svc/x", "root_path": ""})
    assert forwarded is not None and len(forwarded) < len(routes) / 2


def test_routes_changed_after_construction_are_routed_as_starlette_routes_them(
    tmp_path: Path,
) -> None:
    routes = edge_routes(tmp_path)
    late_post = Route("/healthz", _endpoint, methods=["POST"])  # beside the GET-only /healthz
    late_page = Route("/late", _endpoint)
    handled = record_handles([*routes, late_post, late_page])
    skipping, plain = SkippingRouter(routes), Router(routes)
    for router in (skipping, plain):
        router.routes.append(late_post)
        router.routes.insert(0, late_page)
    post = {"type": "http", "path": "/healthz", "root_path": "", "method": "POST"}
    get_late = {**post, "path": "/late", "method": "GET"}
    for scope in (post, get_late):
        assert route_with(skipping, handled, scope) == route_with(plain, handled, scope)
    assert route_with(skipping, handled, post) == [("route", (id(late_post), {}))]
    # A new list of the same length, without the POST route: a 405 again.
    swapped = [route for route in skipping.routes if route is not late_post]
    swapped.append(Route("/other", _endpoint))
    skipping.routes, plain.routes = swapped, list(swapped)
    assert route_with(skipping, handled, post) == route_with(plain, handled, post)
