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

OPENAPI_PATH: Final = "/api/openapi.json"
MEDIA_TYPE: Final = "application/vnd.oai.openapi+json"

Schema = dict[str, Any]

ACCESS_LABELS: Final = {
    "public": "public",
    "user": "paired device or local",
    "admin": "admin device or local",
    "metrics": "local, metrics.allowed_networks or metrics.bearer_token",
    "self": "judges the forwarded request",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> Schema:
    return {"type": [kind, "null"]}


_MS = {"type": "integer", "description": "Epoch milliseconds."}
_MS_OR_NULL = {"type": ["integer", "null"], "description": "Epoch milliseconds, or null."}
_ROLE = {"type": "string", "enum": ["admin", "user"]}

SCHEMAS: Final[dict[str, Schema]] = {
    "Error": {
        "type": "object",
        "description": "Every error body Edge writes. `error` is the broad kind, `reason` the "
        "exact refusal (the `reason` label of `edge_auth_failures_total`; left out only where "
        "Edge cannot name one), `detail` what to do, for a person.",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string"},
            "reason": {"type": "string"},
            "detail": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "Device": {
        "type": "object",
        "required": [
            "id",
            "name",
            "user",
            "role",
            "status",
            "createdAt",
            "lastSeenAt",
            "lastIp",
            "approvedBy",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "user": _nullable("string"),
            "role": _ROLE,
            "status": {"type": "string", "enum": ["paired", "revoked"]},
            "createdAt": _MS,
            "lastSeenAt": _MS_OR_NULL,
            "lastIp": _nullable("string"),
            "approvedBy": _nullable("string"),
        },
        "additionalProperties": False,
    },
    "PairingRequest": {
        "type": "object",
        "required": [
            "id",
            "deviceId",
            "name",
            "clientIp",
            "userAgent",
            "role",
            "reason",
            "createdAt",
            "expiresAt",
        ],
        "properties": {
            "id": {"type": "string"},
            "deviceId": {"type": "string"},
            "name": {"type": "string"},
            "clientIp": _nullable("string"),
            "userAgent": _nullable("string"),
            "role": _ROLE,
            "reason": _nullable("string"),
            "createdAt": _MS,
            "expiresAt": _MS,
        },
        "additionalProperties": False,
    },
    "Invite": {
        "type": "object",
        "required": ["id", "role", "name", "createdAt", "expiresAt", "createdBy", "usedAt"],
        "properties": {
            "id": {"type": "string"},
            "role": _ROLE,
            "name": _nullable("string"),
            "createdAt": _MS,
            "expiresAt": _MS,
            "createdBy": _nullable("string"),
            "usedAt": _MS_OR_NULL,
        },
        "additionalProperties": False,
    },
    "DeviceList": {
        "type": "object",
        "required": ["devices", "requests", "invites"],
        "properties": {
            "devices": {"type": "array", "items": _ref("Device")},
            "requests": {"type": "array", "items": _ref("PairingRequest")},
            "invites": {"type": "array", "items": _ref("Invite")},
        },
        "additionalProperties": False,
    },
    "CreatedInvite": {
        "type": "object",
        "description": "The invite, its one-time code (shown only here), the dashboard link "
        "carrying the code in its fragment, and that link as an inline SVG QR code.",
        "required": ["invite", "code", "url", "qrSvg"],
        "properties": {
            "invite": _ref("Invite"),
            "code": {"type": "string"},
            "url": {"type": "string"},
            "qrSvg": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "RotatedToken": {
        "type": "object",
        "description": "The device's new token; the old one stops working at once.",
        "required": ["deviceToken"],
        "properties": {"deviceToken": {"type": "string"}},
        "additionalProperties": False,
    },
    "Session": {
        "type": "object",
        "required": ["device"],
        "properties": {"device": _ref("Device")},
        "additionalProperties": False,
    },
    "Whoami": {
        "type": "object",
        "description": "How Edge resolved this request's client (as `edge explain --json` "
        "shows it) and who the guard found the caller to be.",
        "required": [
            "client",
            "peer",
            "peerCheck",
            "trustedPeer",
            "scheme",
            "host",
            "local",
            "localRule",
            "hops",
            "anomalies",
            "headerUsed",
            "auth",
        ],
        "properties": {
            "client": {
                "type": "object",
                "required": ["ip", "port"],
                "properties": {"ip": _nullable("string"), "port": _nullable("integer")},
                "additionalProperties": False,
            },
            "peer": {
                "type": "object",
                "required": ["ip", "port", "uid", "user", "owner", "foundBy"],
                "properties": {
                    "ip": _nullable("string"),
                    "port": _nullable("integer"),
                    "uid": _nullable("integer"),
                    "user": _nullable("string"),
                    "owner": _nullable("string"),
                    "foundBy": _nullable("string"),
                },
                "additionalProperties": False,
            },
            "peerCheck": {"type": "string"},
            "trustedPeer": {"type": "boolean"},
            "scheme": {"type": "string"},
            "host": _nullable("string"),
            "local": {"type": "boolean"},
            "localRule": _nullable("string"),
            "hops": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["address", "source", "verdict", "detail"],
                    "properties": {
                        "address": {"type": "string"},
                        "source": {"type": "string"},
                        "verdict": {"type": "string"},
                        "detail": _nullable("string"),
                    },
                    "additionalProperties": False,
                },
            },
            "anomalies": {"type": "array", "items": {"type": "string"}},
            "headerUsed": _nullable("string"),
            "auth": {
                "type": "object",
                "required": ["state", "device"],
                "properties": {
                    "state": {"type": "string", "enum": ["local", "paired", "anonymous"]},
                    "device": {"oneOf": [_ref("Device"), {"type": "null"}]},
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    "RefusalTable": {
        "type": "object",
        "description": "The refusals the control socket can close with, keyed by close reason.",
        "required": ["closeReasons"],
        "properties": {
            "closeReasons": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": [
                        "reason",
                        "closeCode",
                        "title",
                        "message",
                        "nextStep",
                        "state",
                        "next",
                        "drop",
                    ],
                    "properties": {
                        "reason": {"type": "string"},
                        "closeCode": {"type": "integer"},
                        "title": {"type": "string"},
                        "message": {"type": "string"},
                        "nextStep": {"type": "string"},
                        "state": {"type": "string"},
                        "next": {"type": "string"},
                        "drop": {"type": "array", "items": {"type": "string"}},
                    },
                    "additionalProperties": False,
                },
            }
        },
        "additionalProperties": False,
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "ready", "unavailable"]},
            "store": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "ApproveBody": {
        "type": "object",
        "properties": {
            "role": _ROLE,
            "user": {"type": ["string", "null"], "description": "The user the device acts as."},
        },
    },
    "RenameBody": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}},
    },
    "AssignBody": {
        "type": "object",
        "required": ["user"],
        "properties": {
            "user": {"type": ["string", "null"], "description": "A user name; null clears it."}
        },
    },
    "InviteBody": {
        "type": "object",
        "properties": {
            "role": _ROLE,
            "name": {"type": ["string", "null"], "maxLength": 64},
            "ttl": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Seconds the invite stays valid (600 when left out).",
            },
        },
    },
}

SECURITY_SCHEMES: Final[dict[str, Schema]] = {
    "deviceToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <device token>` of a paired device. It wins over "
        "the session cookie when both are sent.",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "edge_session",
        "description": "The dashboard's session cookie (set by `POST /api/session`; named "
        "`__Host-edge_session` under https). A write it authenticates must come from the "
        "gateway's own origin: one `Origin` header, `Sec-Fetch-Site` same-origin or none, and "
        "`Content-Type: application/json`; otherwise 403 `cross_site_write`.",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <metrics.bearer_token>`; a device token does not "
        "open the metrics.",
    },
}

DEVICE_SECURITY: Final[list[dict[str, list[str]]]] = [{"deviceToken": []}, {"sessionCookie": []}]


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


def build_document(settings: Settings) -> dict[str, Any]:
    """The document for the app ``settings`` start: the metrics route where they put it."""
    paths = {**_paths(), **_forward_auth_paths()}
    if settings.metrics.on_gateway_port:
        paths[settings.metrics.path] = _metrics_path()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Edge",
            "version": __version__,
            "description": "Edge's own HTTP API. Keys are camelCase and times epoch "
            "milliseconds. Every error body is `{error, reason, detail}`. Every GET also "
            "answers HEAD. Local clients (this machine, by the `local` rule) need no "
            "credential; elsewhere `x-edge-access` says who may call an operation. The control "
            "WebSocket `/ws` (the dashboard's and `edge pair`'s connection) is not an HTTP "
            "operation.",
        },
        "paths": copy.deepcopy(paths),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": copy.deepcopy(SECURITY_SCHEMES),
        },
    }


def document_bytes(settings: Settings) -> bytes:
    """The document as served: compact, key order kept."""
    return json.dumps(build_document(settings), separators=(",", ":")).encode()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(METHOD, path, operation)`` for every operation, in the document's order."""
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            found.append((method.upper(), path, operation))
    return found


def _shape(response: dict[str, Any]) -> str:
    """`` (`Name`)`` for a JSON answer whose schema is a named component, else nothing."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return "" if name == "Error" else f" ([`{name}`](#{name.lower()}))"
    if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
        name = schema["items"]["$ref"].rsplit("/", 1)[1]
        return f" (array of [`{name}`](#{name.lower()}))"
    return ""


def render_markdown(document: dict[str, Any]) -> str:
    """``docs/api.md``: one table row per operation, then each operation's answers."""
    lines = [
        "# REST API reference",
        "",
        "<!-- Rendered from edge/gateway/openapi.py by `python -m edge.gateway.openapi`; "
        "do not edit. -->",
        "",
        f"Edge serves this reference as an OpenAPI 3.1 document at `GET {OPENAPI_PATH}` "
        "(public: it holds no secret). Keys are camelCase and times epoch milliseconds. "
        "Every GET also answers HEAD. A local client (this machine, by the `local` rule of "
        "[configuration](configuration.md)) needs no credential; elsewhere a paired device "
        "sends `Authorization: Bearer <device token>` or the dashboard's session cookie. "
        "A write the cookie authenticates must come from the gateway's own origin with "
        "`Content-Type: application/json`. The control WebSocket `/ws` (the dashboard's "
        "and `edge pair`'s connection) is not an HTTP operation and is not listed.",
        "",
        'Every error body has one shape, `{"error", "reason", "detail"}`; '
        "[troubleshooting](troubleshooting.md) explains each `reason`. The metrics row "
        "is served at `metrics.path` (`/metrics` by default) only while metrics are on the "
        "gateway's port. The JSON shapes named in brackets are the `components.schemas` of "
        "the document.",
        "",
        "| Method | Path | Auth | Summary |",
        "|---|---|---|---|",
    ]
    ops = operations(document)
    for method, path, op in ops:
        access = ACCESS_LABELS[op["x-edge-access"]]
        lines.append(f"| {method} | `{path}` | {access} | {op['summary']} |")
    for method, path, op in ops:
        lines += ["", f"## {method} `{path}`", "", op["summary"] + "."]
        if "description" in op:
            lines += ["", op["description"]]
        if "requestBody" in op:
            name = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            name = name.rsplit("/", 1)[1]
            lines += [
                "",
                f"Body (JSON, optional keys may be left out): [`{name}`](#{name.lower()}).",
            ]
        lines += [""]
        for status, response in sorted(op["responses"].items()):
            shape = _shape(response)
            lines.append(f"- **{status}**: {response['description']}{shape}")
    lines += ["", "# Shapes"]
    for name, schema in document["components"]["schemas"].items():
        lines += ["", f"## {name}", ""]
        if "description" in schema:
            lines += [schema["description"], ""]
        lines += ["| Key | Type | Required |", "|---|---|---|"]
        required = set(schema.get("required", ()))
        for key, prop in schema.get("properties", {}).items():
            yes = "yes" if key in required else "no"
            lines.append(f"| `{key}` | {_type_text(prop)} | {yes} |")
    return "\n".join(lines) + "\n"


def _type_text(schema: Schema) -> str:
    """A property's type in a few words: ``string or null``, ``array of Device``, an enum."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[`{name}`](#{name.lower()})"
    if "oneOf" in schema:
        return " or ".join(_type_text(option) for option in schema["oneOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if kind == "array":
        text = f"array of {_type_text(schema.get('items', {}))}"
    if kind == "object" and "properties" in schema:
        text = "object: " + ", ".join(f"`{key}`" for key in schema["properties"])
    return text


if __name__ == "__main__":
    print(render_markdown(build_document(Settings())), end="")
