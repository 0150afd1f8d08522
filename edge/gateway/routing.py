"""Starlette's router, with the routes that cannot match a path skipped before they are tried.

Starlette tries every route in order until one matches, so a request for a
late route pays a regular-expression match for each route before it. Edge
has some twenty routes, and upstream forwarding comes after all of them: in
the real server that was about a fifth of Edge's own work on a ``/healthz``
request, and more on every forwarded one (``benchmarks/http_instructions.py``).

``SkippingRouter`` works out, once per route list, for each path that a route
names literally (``/healthz``, ``/ws``), every route that could match it, in
their order; for any other path, every route that is not literal. Trying
only those finds the same route Starlette would, because a skipped route
answers ``Match.NONE`` for that path whatever the method or socket kind. As
in Starlette, the first full match wins, else the first partial one (a wrong
method: 405). When none matches at all (a path to redirect, a 404),
Starlette's own loop runs as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeGuard

from starlette.routing import BaseRoute, Match, Mount, Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send

from edge.gateway.upstream import UpstreamRoute


def _is_literal(route: BaseRoute) -> TypeGuard[Route | WebSocketRoute]:
    return isinstance(route, (Route, WebSocketRoute)) and not route.param_convertors


def _may_match(route: BaseRoute, path: str) -> bool:
    """False only when ``route`` answers ``Match.NONE`` for ``path`` in every scope."""
    if isinstance(route, UpstreamRoute):
        return route.covers(path)
    if isinstance(route, (Route, WebSocketRoute, Mount)):
        return route.path_regex.match(path) is not None
    return True  # a kind of route this module does not know: always tried


class SkippingRouter(Router):
    """A ``Router`` whose skip tables are built from its routes, and rebuilt when they change.

    A change is noticed by the list's identity and length, which catches
    ``add_route``, ``mount`` and a new list; replacing one route in place
    (``router.routes[3] = other``) is not caught, and Edge never does that.
    """

    def __init__(self, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes, **kwargs)
        self._index()

    def _index(self) -> None:
        routes = self.routes
        literal_paths = {route.path for route in routes if _is_literal(route)}
        self._by_literal_path = {
            path: tuple(route for route in routes if _may_match(route, path))
            for path in literal_paths
        }
        self._not_literal = tuple(route for route in routes if not _is_literal(route))
        self._indexed = (routes, len(routes))

    def _candidates(self, scope: Scope) -> tuple[BaseRoute, ...] | None:
        indexed_routes, indexed_count = self._indexed
        if self.routes is not indexed_routes or len(self.routes) != indexed_count:
            self._index()
        if scope.get("root_path"):
            return None  # routes match the path below root_path: leave that to Starlette
        path: str = scope["path"]
        candidates = self._by_literal_path.get(path)
        if candidates is not None:
            return candidates
        if path.endswith("\n"):
            return None  # a route's ``$`` also matches before a final newline
        return self._not_literal

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            candidates = self._candidates(scope)
            if candidates is not None:
                chosen: BaseRoute | None = None
                chosen_scope: Scope = {}
                for route in candidates:
                    match, child_scope = route.matches(scope)
                    if match is Match.FULL:
                        chosen, chosen_scope = route, child_scope
                        break
                    if match is Match.PARTIAL and chosen is None:  # a wrong method: 405
                        chosen, chosen_scope = route, child_scope
                if chosen is not None:
                    if "router" not in scope:
                        scope["router"] = self
                    scope["route"] = chosen
                    scope.update(chosen_scope)
                    await chosen.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)
