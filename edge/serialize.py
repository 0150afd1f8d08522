"""JSON shapes of the domain values, as the REST API, the socket and the UI see them.

Times are epoch milliseconds; keys are camelCase, here and in every ``--json``
of the command line; no token or token hash ever leaves through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge.net import Resolution
from edge.pairing.models import Device, Event, Invite, PairingRequest


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def device_json(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "name": device.name,
        "user": device.user,
        "role": str(device.role),
        "status": device.status,
        "createdAt": _ms(device.created_at),
        "lastSeenAt": _ms(device.last_seen_at),
        "lastIp": device.last_ip,
        "approvedBy": device.approved_by,
    }


def request_json(request: PairingRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "deviceId": request.device_id,
        "name": request.name,
        "clientIp": request.client_ip,
        "userAgent": request.user_agent,
        "role": str(request.role),
        "reason": request.reason,
        "createdAt": _ms(request.created_at),
        "expiresAt": _ms(request.expires_at),
    }


def invite_json(invite: Invite) -> dict[str, Any]:
    return {
        "id": invite.id,
        "role": str(invite.role),
        "name": invite.name,
        "createdAt": _ms(invite.created_at),
        "expiresAt": _ms(invite.expires_at),
        "createdBy": invite.created_by,
        "usedAt": _ms(invite.used_at),
    }


_SECRET_KEYS = frozenset({"token", "token_hash", "tokenHash", "code", "code_hash", "deviceToken"})


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def _convert(key: str, value: Any) -> Any:
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
        return _ms(float(value))
    if isinstance(value, Mapping):
        return event_data_json(value)
    return value


def event_data_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """Event data in the wire shape: camelCase keys, times in ms, secrets dropped."""
    return {_camel(str(k)): _convert(str(k), v) for k, v in data.items() if k not in _SECRET_KEYS}


def camel_keys(value: Any) -> Any:
    """``value`` with every mapping key at every depth in camelCase; values are untouched."""
    if isinstance(value, Mapping):
        return {_camel(str(k)): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [camel_keys(item) for item in value]
    return value


def resolution_json(resolution: Resolution) -> dict[str, Any]:
    """What resolution decided, as ``/api/whoami`` and ``edge explain --json`` show it."""
    shaped: dict[str, Any] = camel_keys(resolution.to_dict())
    return shaped


def event_frame(event: Event) -> dict[str, Any]:
    return {
        "type": "event",
        "event": event.type,
        "seq": event.seq,
        "data": event_data_json(event.data),
    }


def invite_url(origin_url: str, code: str) -> str:
    """Dashboard URL carrying the code in the fragment, which browsers never send to a server."""
    return f"{origin_url.rstrip('/')}/#invite={code}"
