"""Forward-auth endpoints: nginx ``auth_request`` and Caddy ``forward_auth`` ask Edge.

The proxy sends a sub-request that carries the original request's credentials
(``Authorization: Bearer`` or the ``edge_session`` cookie) and its own
forwarding headers. The client was already resolved from those headers under
the usual trust rules, so a request is judged exactly as if it had reached
Edge itself. Allowing answers 200 with identity headers for the proxy to copy.

Denying differs per proxy because their contracts differ: nginx turns any
status but 2xx, 401 and 403 into a 500 and must never see a redirect, so
``/auth/nginx`` answers 401 and names the dashboard in ``Location`` for the
proxy's ``error_page`` to use; Caddy hands a non-2xx answer to the client as
it is, so ``/auth/caddy`` redirects browsers (302) and gives API clients
401 JSON.

A refused browser is sent to Edge's own origin (``/``), where the dashboard
pairs it and sets the session cookie, with the page it wanted in ``?rd=``
(``edge.gateway.return_to``) so that pairing ends there. That cookie is host-only, so browsers
can use a protected app only on the host that serves Edge; API clients send
``Authorization: Bearer <device token>`` and work from anywhere. The query
parameter ``role=admin`` (set in the proxy's configuration) admits only admin
devices and local clients; the proxy sets it, never the visitor (the shipped
Caddyfile replaces the visitor's query), and a query Edge cannot read is the
client's 400, never a 500: anyone could otherwise make Edge blame the proxy.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from edge.gateway.context import AuthState, resolution_of
from edge.gateway.forwarding.headers import header_safe as header_safe
from edge.gateway.forwarding.headers import identity_headers
from edge.gateway.guard import (
    SAFE_METHODS,
    Authenticator,
    cross_site_refusal,
    cross_site_response,
    denial_response,
    store_unavailable,
)
from edge.gateway.live import Live
from edge.gateway.origins import own_origin
from edge.gateway.return_to import sign_in_url
from edge.metrics import Metrics
from edge.net import Resolution
from edge.pairing.models import Role
from edge.pairing.store import StoreError
from edge.refusals import Denial, Rejection, http_answer

logger = logging.getLogger("edge.forward_auth")

NGINX_PATH = "/auth/nginx"
CADDY_PATH = "/auth/caddy"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# What a forward-auth answer asserts about the caller. A proxy must remove
# client-supplied copies of these, in every spelling, before it copies Edge's
# (GHSA-7r4p-vjf4-gxv4); the shipped configurations do.
IDENTITY_HEADERS = (
    "remote-user",
    "remote-name",
    "remote-groups",
    "x-edge-auth",
    "x-edge-device-id",
    "x-edge-role",
)

# Original request line, as each proxy passes it to the sub-request.
_ORIGINAL = {
    "nginx": ("x-original-method", "x-original-uri"),
    "caddy": ("x-forwarded-method", "x-forwarded-uri"),
}
_MAX_LOGGED_URI = 200


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "").lower()


def _required_role(request: Request) -> Role | Literal["invalid"] | None:
    """The strictest ``role`` asked for; ``invalid`` if any value is not a role."""
    texts = request.query_params.getlist("role")
    if not texts:
        return None
    roles = [Role.parse(text) for text in texts]
    if any(role is None for role in roles):
        return "invalid"
    return Role.ADMIN if Role.ADMIN in roles else Role.USER


class ForwardAuth:
    """One forward-auth endpoint; ``proxy`` selects the denial contract."""

    def __init__(
        self,
        proxy: Literal["nginx", "caddy"],
        *,
        authenticate: Authenticator,
        live: Live,
        metrics: Metrics,
    ) -> None:
        self.proxy = proxy
        self.authenticate = authenticate
        self.live = live
        self.metrics = metrics

    async def endpoint(self, request: Request) -> Response:
        started = time.perf_counter()
        required = _required_role(request)
        if required == "invalid":
            # The shipped proxy files never send a bad role, so this is a client's query
            # that reached the sub-request: its fault, answered 400 and not logged as an error.
            logger.info(
                "forward-auth %s: refused a query with role=%r (only role=admin or role=user)",
                request.url.path,
                request.query_params.get("role", "")[:40],
            )
            return _raw_response(*http_answer(Rejection.INVALID_ROLE))
        try:
            auth = await self.authenticate(request.scope)
        except StoreError as exc:
            return _raw_response(*store_unavailable(exc))
        if auth.state == "anonymous":
            return self._deny(request, auth, started)
        if auth.via_cookie:
            # The proxy asks about the visitor's request: a write the session cookie
            # authenticates must come from the gateway's own origin, as on Edge's routes,
            # and so must a WebSocket handshake (Sec-WebSocket-Key reaches the sub-request,
            # the hop-by-hop Upgrade may not): a cross-site page could otherwise open the
            # app's socket as the admin (cross-site WebSocket hijacking).
            method_header = _ORIGINAL[self.proxy][0]
            method = request.headers.get(method_header, "GET").strip().upper()
            upgrade = "sec-websocket-key" in request.headers
            if method not in SAFE_METHODS or upgrade:
                detail = cross_site_refusal(
                    request.scope,
                    resolution_of(request.scope),
                    self.live.config.allowed_origins,
                    require_json=False,
                )
                if detail is not None:
                    return self._refuse_cross_site(request, detail, started)
        if (
            required is not None
            and auth.state == "paired"
            and auth.device is not None
            and not auth.device.role.covers(required)
        ):
            return self._deny(request, auth, started, forbidden=True)
        self.metrics.observe_request("http", auth.state, time.perf_counter() - started)
        if self.live.settings.logging.access_log:
            self._log(request, auth.state, 200)
        response = Response(status_code=200, headers={"cache-control": "no-store"})
        response.raw_headers.extend(identity_headers(auth))
        return response

    def _refuse_cross_site(self, request: Request, detail: str, started: float) -> Response:
        """403 (the proxy refuses the visitor): a cross-site write carried the admin's cookie."""
        label = Denial.CROSS_SITE_WRITE.metric_label
        metrics = self.metrics
        metrics.auth_failure(label)
        metrics.observe_request("http", "denied", time.perf_counter() - started)
        if self.live.settings.logging.access_log:
            self._log(request, "denied", 403, reason=label)
        return _raw_response(*cross_site_response(detail))

    def _deny(
        self, request: Request, auth: AuthState, started: float, *, forbidden: bool = False
    ) -> Response:
        status, headers, body = denial_response(auth, forbidden=forbidden)
        reason = Denial.ROLE_FORBIDDEN if forbidden else auth.denial or Denial.CREDENTIALS_MISSING
        metrics = self.metrics
        metrics.auth_failure(reason.metric_label)
        metrics.observe_request("http", "denied", time.perf_counter() - started)
        browser = _wants_html(request)
        if browser and not forbidden:
            location = self._dashboard_url(request).encode("latin-1")
            if self.proxy == "caddy":
                status, body = 302, b""
                headers = [(b"cache-control", b"no-store")]
            headers.append((b"location", location))
        self._log(request, "denied", status, reason=reason.metric_label)
        return _raw_response(status, headers, body)

    def _dashboard_url(self, request: Request) -> str:
        """The dashboard, with the page the visitor wanted in ``rd`` to return to once paired."""
        original = request.headers.get(_ORIGINAL[self.proxy][1])
        return sign_in_url(own_origin(resolution_of(request.scope)), original)

    def _log(self, request: Request, decision: str, status: int, **extra: object) -> None:
        method_header, uri_header = _ORIGINAL[self.proxy]
        resolution: Resolution = resolution_of(request.scope)
        logger.info(
            "forward-auth %s %s -> %d",
            request.headers.get(method_header, "?")[:16],
            # the path only: a query string may carry secrets of the protected app
            request.headers.get(uri_header, "?").partition("?")[0][:_MAX_LOGGED_URI],
            status,
            extra={
                "proxy": self.proxy,
                "client": resolution.client_ip,
                "decision": decision,
                **extra,
            },
        )


def _raw_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    response = Response(body, status_code=status)
    response.raw_headers = [(b"content-length", str(len(body)).encode("ascii")), *headers]
    return response


def build_forward_auth_routes(
    *, authenticate: Authenticator, live: Live, metrics: Metrics
) -> list[BaseRoute]:
    """``/auth/nginx`` and ``/auth/caddy``; the guard lets ``/auth/`` through to judge itself."""
    nginx = ForwardAuth("nginx", authenticate=authenticate, live=live, metrics=metrics)
    caddy = ForwardAuth("caddy", authenticate=authenticate, live=live, metrics=metrics)
    return [
        Route(NGINX_PATH, nginx.endpoint, methods=METHODS),
        Route(CADDY_PATH, caddy.endpoint, methods=METHODS),
    ]
