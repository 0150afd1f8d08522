"""HTTP endpoints: whoami, health, the API document, apps, the session cookie, devices, metrics."""

from __future__ import annotations

import math
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.config import Settings
from edge.diagnostics import Diagnostics, same_host_proxy
from edge.gateway import bounded_json
from edge.gateway.admin import AdminError, call_admin_method
from edge.gateway.blocking import Blocking
from edge.gateway.context import AuthState, auth_of, resolution_of
from edge.gateway.forwarding.headers import session_cookie_name
from edge.gateway.guard import _bearer
from edge.gateway.health import StoreHealth
from edge.gateway.live import Live
from edge.gateway.metrics_endpoint import metrics_endpoint
from edge.gateway.openapi import MEDIA_TYPE, OPENAPI_PATH, document_bytes
from edge.gateway.origins import own_origin
from edge.gateway.return_to import (
    allowed_origins,
    configured_apps,
    kept_target,
    return_cookie,
    return_target,
)
from edge.metrics import Metrics
from edge.net import Resolution
from edge.pairing.models import Role
from edge.pairing.service import PairingService
from edge.pairing.store import StoreError
from edge.refusals import Denial, error_body, ui_table
from edge.serialize import device_json, resolution_json

MAX_BODY = 64 * 1024
# The dashboard keeps its device token only in this cookie, so it must outlive the browser
# session like the device key does; 400 days is the longest lifetime browsers honour.
SESSION_MAX_AGE = 400 * 86_400
# ``edge doctor --probe`` marks its request with a nonce whoami echoes: proof that the
# answer is Edge's, to this very request, and not a cache's or another server's.
_PROBE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"cache-control": "no-store"})


def _error(code: str, detail: str, status: int) -> Response:
    """A management call's refusal, in the one error shape (its code is also its reason)."""
    return Response(
        error_body(code, code, detail),
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


async def _body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise AdminError("bad_request", "request body over 64 KiB", 413)
    if not raw.strip():
        return {}
    try:
        data = bounded_json.loads(raw, max_bytes=MAX_BODY)
    except bounded_json.JSONRefused as exc:
        raise AdminError("bad_request", f"request body refused: {exc}") from None
    if not isinstance(data, dict):
        raise AdminError("bad_request", "request body must be a JSON object")
    return data


def build_routes(
    *,
    settings: Settings,
    live: Live,
    service: PairingService,
    health: StoreHealth,
    metrics: Metrics,
    blocking: Blocking,
    diagnostics: Diagnostics,
) -> list[Route]:
    """Edge's own HTTP routes; ``settings`` (the ones at start) say where metrics are served."""

    def gateway_view() -> dict[str, Any]:
        """What this worker has seen, for an admin's diagnostics (from memory: no I/O)."""
        local = live.settings.local
        found = same_host_proxy(
            local.loopback, local.peer_check, diagnostics.forwarded, diagnostics.proxies
        )
        return {
            "publicUrl": live.settings.server.public_url,
            "sameHostProxy": found.to_dict(),
            "refusals": diagnostics.snapshot(),
        }

    async def whoami(request: Request) -> Response:
        resolution = resolution_of(request.scope)
        auth = auth_of(request.scope)
        body = resolution_json(resolution)
        body["auth"] = {
            "state": auth.state,
            "device": device_json(auth.device) if auth.device else None,
        }
        body["attempts"] = await _attempts(resolution, auth)
        probe = request.query_params.get("probe")
        if probe is not None and _PROBE.fullmatch(probe):
            body["probe"] = probe
        if auth.state == "local" or (auth.device is not None and auth.device.role == Role.ADMIN):
            body["gateway"] = gateway_view()
        return _json(body)

    async def _attempts(resolution: Resolution, auth: AuthState) -> dict[str, Any] | None:
        """The caller's failure budget; None where no lockout applies (local, paired).

        The guard already counted this request's own failure, or found its
        address locked: those answer without another trip to the store.
        """
        if resolution.local or auth.state != "anonymous":
            return None
        limit = service.policy.rate_limit.failures
        if auth.tries_left is not None or auth.denial is Denial.RATE_LIMITED:
            left = auth.tries_left or 0
            return {"limit": limit, "triesLeft": left, "lockedFor": math.ceil(auth.retry_after)}
        try:
            counted = await blocking.run(service.attempts, resolution.client_ip)
        except StoreError:
            return None
        return {
            "limit": limit,
            "triesLeft": counted.tries_left,
            "lockedFor": math.ceil(counted.locked_for),
        }

    async def refusals(request: Request) -> Response:
        """The refusal table the dashboard describes a closed socket with (public, like ``/``)."""
        return _json(ui_table())

    openapi_body = document_bytes(settings)

    async def openapi(request: Request) -> Response:
        """This API as an OpenAPI document (public, like ``/api/refusals``: it holds no secret)."""
        return Response(openapi_body, media_type=MEDIA_TYPE, headers={"cache-control": "no-cache"})

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problem = await blocking.run(health.check_file)
        if problem is not None:
            return _json({"status": "unavailable", "store": problem}, 503)
        try:
            await blocking.run(service.latest_seq)
        except Exception as exc:
            return _json(
                {"status": "unavailable", "store": f"unreachable: {type(exc).__name__}"}, 503
            )
        if not health.healthy:
            return _json({"status": "unavailable", "store": "event log unreadable"}, 503)
        return _json({"status": "ready", "store": "ok"})

    async def apps(request: Request) -> Response:
        """The configured apps for a paired or local caller, and where it may return to.

        The target is the one the dashboard page was opened with (kept in the
        return cookie, ``edge.gateway.return_to``), checked here against the
        origin this request reached; the answer clears the cookie, so a
        target is followed once.
        """
        own = own_origin(resolution_of(request.scope))
        wanted = kept_target(request.cookies)
        target = (
            return_target(wanted, own=own, allowed=allowed_origins(settings, own))
            if own is not None and wanted
            else None
        )
        response = _json(
            {
                "apps": [
                    {"name": app.name, "url": app.url} for app in configured_apps(settings, own)
                ],
                "returnTo": target,
                "returnRefused": bool(wanted) and target is None,
            }
        )
        if wanted is not None:
            secure = resolution_of(request.scope).scheme == "https"
            response.raw_headers.append((b"set-cookie", return_cookie(None, secure=secure)))
        return response

    async def session_create(request: Request) -> Response:
        auth = auth_of(request.scope)
        token = _bearer(request.scope)
        if auth.device is None or token is None:
            return _error(
                "bad_request",
                "send `Authorization: Bearer <device token>` of a paired device to start a session",
                400,
            )
        response = _json({"device": device_json(auth.device)})
        secure = resolution_of(request.scope).scheme == "https"
        response.set_cookie(
            session_cookie_name(secure=secure),
            token,
            max_age=SESSION_MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=secure,
            path="/",
        )
        return response

    async def session_delete(request: Request) -> Response:
        response = Response(status_code=204)
        for secure in (False, True):
            response.delete_cookie(
                session_cookie_name(secure=secure),
                path="/",
                httponly=True,
                samesite="strict",
                secure=secure,
            )
        return response

    async def admin_call(request: Request, method: str, params: dict[str, Any]) -> Response:
        auth = auth_of(request.scope)
        try:
            result = await call_admin_method(
                service,
                blocking,
                method,
                params,
                auth=auth,
                resolution=resolution_of(request.scope),
                public_url=live.settings.server.public_url,
            )
        except AdminError as exc:
            return _error(exc.code, str(exc), exc.status)
        return _json(result)

    def admin_route(method: str, *, body: bool = False, **path_params: str) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                params = await _body(request) if body else {}
            except AdminError as exc:
                return _error(exc.code, str(exc), exc.status)
            for key, path_key in path_params.items():
                params[key] = request.path_params[path_key]
            return await admin_call(request, method, params)

        return endpoint

    routes = [
        Route("/api/whoami", whoami),
        Route("/api/refusals", refusals),
        Route(OPENAPI_PATH, openapi),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/apps", apps),
        Route("/api/session", session_create, methods=["POST"]),
        Route("/api/session", session_delete, methods=["DELETE"]),
        Route("/api/devices", admin_route("devices.list")),
        Route(
            "/api/requests/{rid}/approve",
            admin_route("devices.approve", body=True, requestId="rid"),
            methods=["POST"],
        ),
        Route(
            "/api/requests/{rid}/reject",
            admin_route("devices.reject", requestId="rid"),
            methods=["POST"],
        ),
        Route(
            "/api/devices/{did}/revoke",
            admin_route("devices.revoke", deviceId="did"),
            methods=["POST"],
        ),
        Route(
            "/api/devices/{did}/rename",
            admin_route("devices.rename", body=True, deviceId="did"),
            methods=["POST"],
        ),
        Route(
            "/api/devices/{did}/assign",
            admin_route("devices.assign", body=True, deviceId="did"),
            methods=["POST"],
        ),
        Route(
            "/api/devices/{did}/rotate",
            admin_route("devices.rotate", deviceId="did"),
            methods=["POST"],
        ),
        Route("/api/invites", admin_route("invites.list"), methods=["GET"]),
        Route("/api/invites", admin_route("invites.create", body=True), methods=["POST"]),
        Route(
            "/api/invites/{iid}", admin_route("invites.cancel", inviteId="iid"), methods=["DELETE"]
        ),
    ]
    if settings.metrics.on_gateway_port:
        endpoint = metrics_endpoint(
            lambda: live.config,
            metrics.render,
            service,
            metrics.auth_failure,
            blocking,
        )
        routes.append(Route(settings.metrics.path, endpoint))
    return routes
