"""The shapes of the REST API's bodies and its security schemes, for ``edge.gateway.openapi``.

Kept apart from the operations so that each file reads as one thing: here, what
the API's JSON looks like (camelCase keys, epoch milliseconds, as
``edge.serialize`` writes them); there, which route answers what to whom.
"""

from __future__ import annotations

from typing import Any, Final

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
            "now": {
                **_MS,
                "description": "The gateway's clock, which presence (last seen) is judged by.",
            },
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
    "Apps": {
        "type": "object",
        "required": ["apps", "returnTo", "returnRefused"],
        "properties": {
            "apps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "url"],
                    "properties": {"name": {"type": "string"}, "url": {"type": "string"}},
                    "additionalProperties": False,
                },
            },
            "returnTo": {
                "type": ["string", "null"],
                "description": "The checked absolute URL to send the browser to, if any.",
            },
            "returnRefused": {
                "type": "boolean",
                "description": "An `rd` was given and is not one of this gateway's addresses.",
            },
        },
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
            "attempts",
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
            "probe": {
                "type": "string",
                "description": "The `probe` query parameter echoed (1-64 of A-Z a-z 0-9 _ -): "
                "`edge doctor --probe` proves the answer is to its own request.",
            },
            "gateway": {
                "type": "object",
                "description": "For local and admin callers only: what this worker has seen "
                "(a same-host proxy and whether it was seen forwarding, refusals by reason).",
                "required": ["publicUrl", "sameHostProxy", "refusals"],
                "properties": {
                    "publicUrl": _nullable("string"),
                    "sameHostProxy": {
                        "type": "object",
                        "required": ["proxies", "warning", "forwarded"],
                        "properties": {
                            "proxies": {"type": "array", "items": {"type": "string"}},
                            "warning": _nullable("string"),
                            "forwarded": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "required": ["at", "peer", "header", "client"],
                                        "properties": {
                                            "at": {"type": "number"},
                                            "peer": _nullable("string"),
                                            "header": {"type": "string"},
                                            "client": _nullable("string"),
                                        },
                                        "additionalProperties": False,
                                    },
                                    {"type": "null"},
                                ]
                            },
                        },
                        "additionalProperties": False,
                    },
                    "refusals": {
                        "type": "object",
                        "required": ["counts", "recent"],
                        "properties": {
                            "counts": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                            },
                            "recent": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["at", "reason", "peer", "anomaly"],
                                    "properties": {
                                        "at": {"type": "number"},
                                        "reason": {"type": "string"},
                                        "peer": _nullable("string"),
                                        "anomaly": _nullable("string"),
                                    },
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            },
            "attempts": {
                "description": "This address's budget of failed attempts before a lockout "
                "(auth.rate_limit); null for a local client or a paired device, which no lockout "
                "applies to.",
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["limit", "triesLeft", "lockedFor"],
                        "properties": {
                            "limit": {"type": "integer"},
                            "triesLeft": {"type": "integer"},
                            "lockedFor": {"type": "integer", "description": "seconds; 0: none"},
                        },
                        "additionalProperties": False,
                    },
                    {"type": "null"},
                ],
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
            },
            "causes": {
                "type": "object",
                "description": "What really went wrong when a refusal comes with an anomaly "
                "of /api/whoami; ``fix`` holds ``{peer}`` for the proxy's address.",
                "additionalProperties": {
                    "type": "object",
                    "required": ["refusal", "anomaly", "title", "message", "fix", "then"],
                    "properties": {
                        "refusal": {"type": "string"},
                        "anomaly": {"type": "string"},
                        "title": {"type": "string"},
                        "message": {"type": "string"},
                        "fix": {"type": "string"},
                        "then": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
            },
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
        "description": "Without `role` the device is approved as `user`, whatever it asked for: "
        "admin is granted only when named.",
        "properties": {
            "role": _ROLE,
            "user": {"type": ["string", "null"], "description": "The user the device acts as."},
            "replaces": {
                "type": ["string", "null"],
                "description": "A paired device this one takes over from (the same browser or "
                "machine paired again): revoked in the same write, and its user kept unless "
                "`user` is given.",
            },
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
