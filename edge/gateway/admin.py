"""Device management shared by the socket's ``req`` frames and the REST API.

One function per operation, each called with the acting device so the audit
trail says who did it. Admin rights are checked here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import segno

from edge.gateway.blocking import Blocking
from edge.gateway.context import AuthState
from edge.gateway.origins import own_origin
from edge.net import Resolution
from edge.pairing.models import INVITE_MAX_TTL, USER_RULE, Device, Role, valid_user
from edge.pairing.service import PairingError, PairingService
from edge.pairing.store import StoreError
from edge.serialize import device_json, invite_json, invite_url, request_json

DEFAULT_INVITE_TTL = 600.0


class AdminError(Exception):
    """A refused or failed management call; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def actor_of(device: Device | None) -> str:
    if device is None:
        return "local"
    return f"device:{device.id[:12]} ({device.name})"


def acting_device(auth: AuthState) -> Device | None:
    """The device a management call acts as; None only for a client the guard found local.

    Authority is positive: "no device" never means "local". A caller whose
    resolved state is anything but ``local`` or a paired device (an anonymous
    request that reached a handler through a route the guard let pass, such as
    a misplaced ``metrics.path``) is refused here, whatever the guard did.
    """
    if auth.device is not None and auth.state in ("paired", "local"):
        return auth.device
    if auth.state == "local":
        return None
    raise AdminError(
        "unauthorized",
        "device management needs a local client or a paired admin device; pair this client "
        "first (`edge pair --url <gateway URL> --token <gateway token>`) and send its device token",
        401,
    )


def _str(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AdminError("bad_request", f"'{key}' must be a non-empty string")
    return value.strip()


def _user(params: Mapping[str, Any], *, required: bool = False) -> str | None:
    """The ``user`` parameter: a user name, or absent/null (required: null clears)."""
    if "user" not in params and required:
        raise AdminError("bad_request", "'user' must be a user name, or null to clear it")
    value = params.get("user")
    if value is None or (value == "" and not required):
        return None
    if not isinstance(value, str) or valid_user(value) is None:
        raise AdminError("bad_request", f"'user' is not a user name: {USER_RULE}")
    return value


def _role(params: Mapping[str, Any], key: str = "role") -> Role | None:
    value = params.get(key)
    if value is None:
        return None
    try:
        return Role(value)
    except ValueError:
        raise AdminError("bad_request", f"'{key}' must be 'admin' or 'user'") from None


def _ttl(params: Mapping[str, Any]) -> float:
    value = params.get("ttl", DEFAULT_INVITE_TTL)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= INVITE_MAX_TTL
    ):
        raise AdminError(
            "bad_request", f"'ttl' must be seconds between 1 and {int(INVITE_MAX_TTL)}"
        )
    return float(value)


def invite_qr_svg(url: str) -> str:
    return str(segno.make(url, error="m").svg_inline(scale=4, border=2, dark="#000", light="#fff"))


def _list(service: PairingService) -> dict[str, Any]:
    """Everything the dashboard lists, and the gateway's clock it judges presence by."""
    return {
        "devices": [device_json(d) for d in service.list_devices()],
        "requests": [request_json(r) for r in service.list_requests()],
        "invites": [invite_json(i) for i in service.list_invites()],
        "now": int(service.now() * 1000),
    }


def _run_method(
    service: PairingService,
    method: str,
    params: Mapping[str, Any],
    actor_device: Device | None,
    origin_url: str,
) -> Any:
    actor = actor_of(actor_device)
    if method == "self.forget":
        if actor_device is None:
            raise AdminError("bad_request", "a local client without a device has nothing to forget")
        return device_json(service.revoke(actor_device.id, actor=actor))
    if actor_device is not None and actor_device.role != Role.ADMIN:
        raise AdminError("forbidden", "this device is not an admin; ask an operator", status=403)
    handlers: dict[str, Callable[[], Any]] = {
        "devices.list": lambda: _list(service),
        "devices.approve": lambda: device_json(_approve(service, params, actor)),
        "devices.assign": lambda: device_json(
            service.assign_user(_str(params, "deviceId"), _user(params, required=True), actor=actor)
        ),
        "devices.reject": lambda: request_json(
            service.reject(_str(params, "requestId"), actor=actor)
        ),
        "devices.revoke": lambda: device_json(
            service.revoke(_str(params, "deviceId"), actor=actor)
        ),
        "devices.rename": lambda: device_json(
            service.rename(_str(params, "deviceId"), _str(params, "name"), actor=actor)
        ),
        "devices.rotate": lambda: {
            "deviceToken": service.rotate_token(_str(params, "deviceId"), actor=actor)
        },
        "invites.list": lambda: [invite_json(i) for i in service.list_invites()],
        "invites.create": lambda: _create_invite(service, params, actor, origin_url),
        "invites.cancel": lambda: invite_json(
            service.cancel_invite(_str(params, "inviteId"), actor=actor)
        ),
    }
    handler = handlers.get(method)
    if handler is None:
        raise AdminError("unknown_method", f"unknown method {method!r}", status=404)
    return handler()


def _approve(service: PairingService, params: Mapping[str, Any], actor: str) -> Device:
    """Approve a request; with ``replaces``, revoke that older twin in the same write."""
    request_id, role, user = _str(params, "requestId"), _role(params), _user(params)
    at_most = Role.USER  # admin only when the caller names it
    if params.get("replaces") is None:
        return service.approve(request_id, role=role, actor=actor, user=user, at_most=at_most)
    device, _ = service.approve_replacing(
        request_id, _str(params, "replaces"), role=role, actor=actor, user=user, at_most=at_most
    )
    return device


def _create_invite(
    service: PairingService, params: Mapping[str, Any], actor: str, origin_url: str
) -> Any:
    role = _role(params) or Role.USER
    name = params.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 64):
        raise AdminError("bad_request", "'name' must be a string of at most 64 characters")
    invite, code = service.create_invite(
        role=role, name=name or None, ttl=_ttl(params), actor=actor
    )
    url = invite_url(origin_url, code)
    return {"invite": invite_json(invite), "code": code, "url": url, "qrSvg": invite_qr_svg(url)}


async def call_admin_method(
    service: PairingService,
    blocking: Blocking,
    method: str,
    params: Mapping[str, Any],
    *,
    auth: AuthState,
    resolution: Resolution,
    public_url: str | None = None,
) -> Any:
    """Run one management call through the blocking door (the store may block).

    ``auth`` is the caller as the guard or the socket handshake resolved it;
    ``acting_device`` refuses anyone who is neither local nor a paired device.
    Invite links are built on ``server.public_url`` (how other devices reach
    the dashboard), else on the origin the caller reached, validated (a
    garbled Host falls back to localhost rather than into a link).
    """
    device = acting_device(auth)
    origin_url = public_url or own_origin(resolution) or "http://localhost"
    try:
        return await blocking.run(_run_method, service, method, params, device, origin_url)
    except PairingError as exc:
        code, status = _error_kind(exc)
        raise AdminError(code, str(exc), status) from None
    except StoreError as exc:
        raise AdminError("store_unavailable", f"{exc}; try again shortly", 503) from None


_ERROR_KINDS = {
    "NotFound": ("not_found", 404),
    "AlreadyResolved": ("already_resolved", 409),
    "PendingLimitReached": ("pending_limit", 429),
    "InvalidValue": ("bad_request", 400),
}


def _error_kind(exc: PairingError) -> tuple[str, int]:
    for cls in type(exc).__mro__:
        if cls.__name__ in _ERROR_KINDS:
            return _ERROR_KINDS[cls.__name__]
    return ("pairing_error", 400)
