"""The REST API as an OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

The document is written here as data rather than generated from docstrings:
who may call a route is decided by the guard (``edge.gateway.guard``) from the
path, not by the handler, and the error answers come from the refusal table
(``edge.refusals``), so neither could be read off the handlers. Keeping the
whole document in one place lets ``tests/gateway/test_openapi.py`` hold it to
the app both ways (every route the app serves is documented, every documented
operation is served) and check real answers against its schemas, and lets
``docs/api.md`` be rendered from it (``python -m edge.gateway.openapi > docs/api.md``,
for the default settings).

Keys are camelCase and times epoch milliseconds, as ``edge.serialize`` writes
them. ``HEAD`` is not listed: every ``GET`` route answers it too, without a
body. Each operation carries ``x-edge-access``, the guard's verdict for its
path: ``public``, ``user`` (any paired device, or a local client), ``admin``
(an admin device, or a local client), ``metrics`` (the metrics rule) or
``self`` (forward-auth: the endpoint judges the forwarded request itself).
A local client needs no credential, and OpenAPI has no security scheme for
"the connection comes from this machine", so that rule lives in the
descriptions and in ``x-edge-access``.

The metrics route is in the document only when ``metrics`` are served on the
gateway's port, at the configured ``metrics.path``, exactly as the app
registers it.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

from edge import __version__
from edge.config import Settings
from edge.gateway.openapi_markdown import operations as operations
from edge.gateway.openapi_markdown import render_markdown
from edge.gateway.openapi_schemas import (
    _ROLE,
    DEVICE_SECURITY,
    SCHEMAS,
    SECURITY_SCHEMES,
    Schema,
    _ref,
)
from edge.gateway.openapi_schemas import (
    MEDIA_TYPE as MEDIA_TYPE,
)
from edge.gateway.openapi_schemas import (
    OPENAPI_PATH as OPENAPI_PATH,
)


def _json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json_content(_ref("Error"))}


def _ok(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": _json_content(schema)}


_UNAUTHORIZED: dict[str, Any] = {
    "description": "No credential, or a wrong, revoked or locked-out one (`reason` says which; "
    "`Retry-After` while the address is locked out). Local clients are never refused.",
    "headers": {
        "WWW-Authenticate": {"schema": {"type": "string"}},
        "Retry-After": {"schema": {"type": "integer"}},
    },
    "content": _json_content(_ref("Error")),
}
_STORE_DOWN: dict[str, Any] = {
    "description": "The pairing store cannot be reached to check the credential or to answer "
    "(`reason` store_unavailable).",
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    "content": _json_content(_ref("Error")),
}
_CROSS_SITE = "A cookie-authenticated write that did not come from the gateway's own origin."


def _public_errors() -> dict[str, Any]:
    # The guard checks a credential even on a public route (a wrong one is counted), so
    # a presented token the caches cannot judge while the store is down answers 503.
    return {"503": _STORE_DOWN}


def _user_errors(*, write: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {"401": _UNAUTHORIZED, "503": _STORE_DOWN}
    if write:
        responses["403"] = _error(_CROSS_SITE)
    return responses


def _admin_errors(*, write: bool, body: bool, found: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "401": _UNAUTHORIZED,
        "403": _error(
            "The device is not an admin (`reason` role_forbidden)"
            + (", or a cookie-authenticated write from another origin." if write else ".")
        ),
        "503": _STORE_DOWN,
    }
    if body or found:
        responses["400"] = _error(
            "The body is not a JSON object, a value is refused, or an id is not well-formed."
        )
    if body:
        responses["413"] = _error("The body is over 64 KiB.")
    if found:
        responses["404"] = _error("No such request, device or invite (`reason` not_found).")
    return responses


def _op(
    operation_id: str,
    summary: str,
    access: str,
    responses: dict[str, Any],
    *,
    tag: str,
    description: str | None = None,
    body: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "x-edge-access": access,
        "responses": responses,
    }
    if description:
        op["description"] = description
    if access in ("user", "admin"):
        op["security"] = DEVICE_SECURITY
    elif access == "metrics":
        op["security"] = [{"metricsToken": []}]
    elif access == "public":
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": False, "content": _json_content(_ref(body))}
    if parameters:
        op["parameters"] = parameters
    return op


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


_RID = _path_param("rid", "The pairing request's id.")
_DID = _path_param("did", "The device's id.")
_IID = _path_param("iid", "The invite's id.")


def _paths() -> dict[str, Any]:
    def admin_device_op(operation_id: str, summary: str, *, body: str | None = None) -> Any:
        responses = {
            "200": _ok(_ref("Device")),
            **_admin_errors(write=True, body=body is not None, found=True),
        }
        return {
            "post": _op(
                operation_id,
                summary,
                "admin",
                responses,
                tag="devices",
                body=body,
                parameters=[_DID],
            )
        }

    return {
        "/": {
            "get": _op(
                "dashboard",
                "The dashboard page",
                "public",
                {
                    "200": {"description": "The page.", "content": {"text/html": {}}},
                    **_public_errors(),
                },
                tag="dashboard",
                description="The dashboard's HTML; its files are under `/ui/`.",
            )
        },
        "/api/whoami": {
            "get": _op(
                "whoami",
                "How Edge sees this request",
                "public",
                {"200": _ok(_ref("Whoami")), **_public_errors()},
                tag="meta",
                description="The resolved client, the proxy hops walked, and who the caller "
                "is (`auth.state`: local, paired or anonymous).",
            )
        },
        "/api/refusals": {
            "get": _op(
                "refusals",
                "The refusal table",
                "public",
                {"200": _ok(_ref("RefusalTable")), **_public_errors()},
                tag="meta",
                description="Every close reason of the control socket with its words and what "
                "the dashboard does next.",
            )
        },
        OPENAPI_PATH: {
            "get": _op(
                "openapi",
                "This document",
                "public",
                {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {MEDIA_TYPE: {"schema": {"type": "object"}}},
                    },
                    **_public_errors(),
                },
                tag="meta",
            )
        },
        "/healthz": {
            "get": _op(
                "healthz",
                "Liveness",
                "public",
                {"200": _ok(_ref("Health"), "The process answers."), **_public_errors()},
                tag="health",
            )
        },
        "/readyz": {
            "get": _op(
                "readyz",
                "Readiness: the pairing store is usable",
                "public",
                {
                    "200": _ok(_ref("Health"), "Ready; `store` is ok."),
                    "503": {
                        "description": "Not ready: `store` says why (unreachable, or its file "
                        "lost or damaged), or a presented credential could not be checked.",
                        "content": _json_content(
                            {"oneOf": [_ref("Health"), _ref("Error")]},
                        ),
                    },
                },
                tag="health",
            )
        },
        "/api/apps": {
            "get": _op(
                "apps",
                "The configured apps, and where to return to",
                "user",
                {"200": _ok(_ref("Apps")), **_user_errors(write=False)},
                tag="session",
                description="Each configured upstream as a link for a paired device, and "
                "`returnTo`: the page a refused browser wanted (forward-auth's sign-in link "
                "opens the dashboard with `?rd=<address>`, which the page keeps in the "
                "`edge_return` cookie), when it is a path on Edge's own origin or on an upstream "
                "host's origin; else null, with `returnRefused` if one was given. The answer "
                "clears that cookie.",
            )
        },
        "/api/session": {
            "post": _op(
                "sessionCreate",
                "Start a browser session",
                "user",
                {
                    "200": {
                        **_ok(_ref("Session")),
                        "headers": {
                            "Set-Cookie": {
                                "schema": {"type": "string"},
                                "description": "The session cookie: HttpOnly, SameSite=Strict, "
                                "Path=/, 400 days; `__Host-` prefixed and Secure under https.",
                            }
                        },
                    },
                    "400": _error("The request did not carry a paired device's bearer token."),
                    **_user_errors(write=True),
                },
                tag="session",
                description="Send `Authorization: Bearer <device token>`; the answer sets the "
                "session cookie holding that token.",
            ),
            "delete": _op(
                "sessionDelete",
                "End the browser session",
                "user",
                {"204": {"description": "The cookie is cleared."}, **_user_errors(write=True)},
                tag="session",
            ),
        },
        "/api/devices": {
            "get": _op(
                "devicesList",
                "Devices, pending requests and invites",
                "admin",
                {
                    "200": _ok(_ref("DeviceList")),
                    **_admin_errors(write=False, body=False, found=False),
                },
                tag="devices",
            )
        },
        "/api/requests/{rid}/approve": {
            "post": _op(
                "requestApprove",
                "Approve a pairing request",
                "admin",
                {
                    "200": _ok(_ref("Device"), "The new device."),
                    "409": _error("The request was resolved already."),
                    **_admin_errors(write=True, body=True, found=True),
                },
                tag="devices",
                body="ApproveBody",
                parameters=[_RID],
            )
        },
        "/api/requests/{rid}/reject": {
            "post": _op(
                "requestReject",
                "Reject a pairing request",
                "admin",
                {
                    "200": _ok(_ref("PairingRequest")),
                    "409": _error("The request was resolved already."),
                    **_admin_errors(write=True, body=False, found=True),
                },
                tag="devices",
                parameters=[_RID],
            )
        },
        "/api/devices/{did}/revoke": admin_device_op("deviceRevoke", "Revoke a device"),
        "/api/devices/{did}/rename": admin_device_op(
            "deviceRename", "Rename a device", body="RenameBody"
        ),
        "/api/devices/{did}/assign": admin_device_op(
            "deviceAssign", "Set or clear the user a device acts as", body="AssignBody"
        ),
        "/api/devices/{did}/rotate": {
            "post": _op(
                "deviceRotate",
                "Issue a device a new token",
                "admin",
                {
                    "200": _ok(_ref("RotatedToken")),
                    **_admin_errors(write=True, body=False, found=True),
                },
                tag="devices",
                parameters=[_DID],
            )
        },
        "/api/invites": {
            "get": _op(
                "invitesList",
                "Open invites",
                "admin",
                {
                    "200": _ok({"type": "array", "items": _ref("Invite")}),
                    **_admin_errors(write=False, body=False, found=False),
                },
                tag="invites",
            ),
            "post": _op(
                "inviteCreate",
                "Create an invite",
                "admin",
                {
                    "200": _ok(_ref("CreatedInvite")),
                    "429": _error("Too many open invites or pending requests."),
                    **_admin_errors(write=True, body=True, found=False),
                },
                tag="invites",
                body="InviteBody",
            ),
        },
        "/api/invites/{iid}": {
            "delete": _op(
                "inviteCancel",
                "Cancel an invite",
                "admin",
                {"200": _ok(_ref("Invite")), **_admin_errors(write=True, body=False, found=True)},
                tag="invites",
                parameters=[_IID],
            )
        },
    }


FORWARD_AUTH_METHODS: Final = ("get", "post", "put", "patch", "delete", "options")


def _forward_auth(proxy: str, description: str, denied: dict[str, Any]) -> dict[str, Any]:
    role = {
        "name": "role",
        "in": "query",
        "required": False,
        "schema": _ROLE,
        "description": "Set by the proxy's configuration: `admin` admits only admin devices "
        "and local clients.",
    }
    item: dict[str, Any] = {}
    for method in FORWARD_AUTH_METHODS:
        responses = {
            "200": {
                "description": "Allowed; the identity headers (`Remote-User`, `X-Edge-Auth`, "
                "`X-Edge-Device-Id`, `X-Edge-Role`, ...) are for the proxy to copy upstream.",
            },
            "400": _error("The query names an unknown role (`reason` invalid_role)."),
            **denied,
            "503": _STORE_DOWN,
        }
        item[method] = _op(
            f"forwardAuth{proxy.title()}{method.title()}",
            f"{proxy} forward-auth sub-request",
            "self",
            responses,
            tag="forward-auth",
            description=description,
            parameters=[role],
        )
        item[method]["security"] = DEVICE_SECURITY
    return item


def _forward_auth_paths() -> dict[str, Any]:
    forbidden = _error(
        "A paired device without the role asked for, or a cookie-authenticated write or "
        "WebSocket handshake from another origin."
    )
    return {
        "/auth/nginx": _forward_auth(
            "nginx",
            "For nginx `auth_request`: judges the original request (its credentials and "
            "forwarding headers) as if it had reached Edge. Never redirects: nginx makes any "
            "status but 2xx, 401 and 403 a 500.",
            {
                "401": {
                    **_UNAUTHORIZED,
                    "description": _UNAUTHORIZED["description"]
                    + " A browser (`Accept: text/html`) also gets `Location`: the dashboard.",
                },
                "403": forbidden,
            },
        ),
        "/auth/caddy": _forward_auth(
            "caddy",
            "For Caddy `forward_auth`: judges the original request as if it had reached Edge. "
            "Caddy passes a refusal to the client as it is.",
            {
                "302": {"description": "A refused browser is sent to the dashboard (`Location`)."},
                "401": _UNAUTHORIZED,
                "403": forbidden,
            },
        ),
    }


def _metrics_path() -> dict[str, Any]:
    return {
        "get": _op(
            "metrics",
            "Prometheus metrics",
            "metrics",
            {
                "200": {
                    "description": "The Prometheus text exposition.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": {
                    **_UNAUTHORIZED,
                    "description": "Not local, not in metrics.allowed_networks and no right "
                    "metrics.bearer_token (`reason` metrics_forbidden), or the address is "
                    "locked out after wrong guesses (rate_limited, with `Retry-After`).",
                },
            },
            tag="metrics",
            description="Served to local clients and metrics.allowed_networks without a "
            "credential, else to the holder of metrics.bearer_token.",
        )
    }


_REQUEST_ID_PARAMETER: dict[str, Any] = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Taken only from a trusted proxy, and only when it is 1 to 128 visible "
    "ASCII characters; otherwise Edge makes one. It is in the access and audit log lines "
    "and passed upstream.",
    "schema": {"type": "string", "maxLength": 128},
}
_REQUEST_ID_HEADER: dict[str, Any] = {
    "description": "The request's id, as in Edge's log lines (quote it when reporting a problem).",
    "schema": {"type": "string"},
}


def _with_request_ids(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation takes ``X-Request-ID`` and every answer carries one."""
    for methods in paths.values():
        for operation in methods.values():
            operation.setdefault("parameters", []).append(
                {"$ref": "#/components/parameters/RequestId"}
            )
            for response in operation["responses"].values():
                headers = response.setdefault("headers", {})
                headers["X-Request-ID"] = {"$ref": "#/components/headers/RequestId"}
    return paths


def build_document(settings: Settings) -> dict[str, Any]:
    """The document for the app ``settings`` start: the metrics route where they put it."""
    paths = {**_paths(), **_forward_auth_paths()}
    if settings.metrics.on_gateway_port:
        paths[settings.metrics.path] = _metrics_path()
    paths = _with_request_ids(copy.deepcopy(paths))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Edge",
            "version": __version__,
            "description": "Edge's own HTTP API. Keys are camelCase and times epoch "
            "milliseconds. Every error body is `{error, reason, detail}`. Every GET also "
            "answers HEAD, and every answer carries `X-Request-ID`, the id Edge's log lines "
            "give the request (a trusted proxy's own, or one Edge makes). Local clients (this "
            "machine, by the `local` rule) need no "
            "credential; elsewhere `x-edge-access` says who may call an operation. The control "
            "WebSocket `/ws` (the dashboard's and `edge pair`'s connection) is not an HTTP "
            "operation.",
        },
        "paths": paths,
        "components": {
            "parameters": {"RequestId": copy.deepcopy(_REQUEST_ID_PARAMETER)},
            "headers": {"RequestId": copy.deepcopy(_REQUEST_ID_HEADER)},
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": copy.deepcopy(SECURITY_SCHEMES),
        },
    }


def document_bytes(settings: Settings) -> bytes:
    """The document as served: compact, key order kept."""
    return json.dumps(build_document(settings), separators=(",", ":")).encode()


if __name__ == "__main__":
    print(render_markdown(build_document(Settings())), end="")
