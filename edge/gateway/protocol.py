"""The control WebSocket's wire format, read at the edge into the attempts pairing decides on.

A frame is text; it is decoded under ``bounded_json``'s limits (size, depth)
and then checked field by field, so the pairing service receives a typed
``ConnectAttempt`` (or a ``MalformedConnect`` saying what is wrong) and never
sees JSON. A text that is not a connect frame at all (not JSON, not an
object, another ``type``, a binary frame) is ``None``: the socket refuses it
with ``invalid handshake`` at once, while a malformed connect frame is the
service's to refuse, after its lockout check, like any other attempt.

After ``hello`` each frame is a ``req`` (``read_call``), answered by a ``res``
(``result_frame``, ``error_frame``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.gateway import bounded_json
from edge.pairing.models import ConnectAttempt, MalformedConnect, Role
from edge.pairing.service import MAX_NAME_CHARS, MAX_SECRET_CHARS, clean_name

MAX_FRAME_BEFORE_HELLO = 64 * 1024
MAX_FRAME_AFTER_HELLO = 1024 * 1024
AUTH_FIELDS = ("token", "deviceToken", "invite")


def read_connect(text: str | None) -> ConnectAttempt | MalformedConnect | None:
    """The attempt a client's first frame makes; ``None`` when it is no connect frame."""
    if text is None:
        return None
    try:
        frame = bounded_json.loads(text, max_bytes=MAX_FRAME_BEFORE_HELLO)
    except bounded_json.JSONRefused:
        return None
    if not isinstance(frame, dict) or frame.get("type") != "connect":
        return None
    return connect_attempt(frame)


def connect_attempt(frame: Mapping[str, object]) -> ConnectAttempt | MalformedConnect:
    """A decoded connect frame, checked for shape."""
    if not isinstance(frame, Mapping):
        return MalformedConnect("the connect frame must be a JSON object")
    auth = frame.get("auth", {})
    if not isinstance(auth, dict):
        return MalformedConnect("auth must be an object")
    unknown = sorted(str(key) for key in auth if key not in AUTH_FIELDS)
    if unknown:
        return MalformedConnect(
            f"auth has an unknown field {unknown[0]!r} (expected token, deviceToken or invite)"
        )
    present: list[tuple[str, str]] = []
    for key in AUTH_FIELDS:
        value = auth.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            return MalformedConnect(f"auth.{key} must be a string")
        if len(value) > MAX_SECRET_CHARS:
            return MalformedConnect(f"auth.{key} is longer than {MAX_SECRET_CHARS} characters")
        if value:
            present.append((key, value))
    if len(present) > 1:
        return MalformedConnect("auth must carry only one of token, deviceToken and invite")
    role = Role.parse(frame.get("role", Role.USER.value))
    if role is None:
        return MalformedConnect('role must be "admin" or "user"')
    client = frame.get("client")
    name: str | None = None
    if client is not None:
        if not isinstance(client, dict):
            return MalformedConnect("client must be an object")
        raw_name = client.get("name")
        if raw_name is not None:
            if not isinstance(raw_name, str):
                return MalformedConnect("client.name must be a string")
            if raw_name.strip():
                name = clean_name(raw_name)
                if name is None:
                    return MalformedConnect(
                        f"client.name must be 1-{MAX_NAME_CHARS} printable characters"
                    )
    credential, secret = present[0] if present else (None, "")
    device = frame.get("device")
    claimed = device.get("id") if isinstance(device, dict) else None
    return ConnectAttempt(
        credential=credential,
        secret=secret,
        role=role,
        name=name,
        device=device,
        device_id=claimed if isinstance(claimed, str) else None,
        empty_auth=not auth,
    )


def with_session_cookie(attempt: ConnectAttempt, device_token: str) -> ConnectAttempt:
    """The attempt with the session cookie's device token as its credential."""
    return dataclasses.replace(attempt, credential="deviceToken", secret=device_token)


RequestId = str | int | None


@dataclass(frozen=True)
class Call:
    """A ``req`` frame after ``hello``: a management method and its parameters."""

    id: RequestId
    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class BadCall:
    """A frame after ``hello`` that is no well-formed ``req``; answered, the socket stays open."""

    id: RequestId
    message: str


def read_call(text: str) -> Call | BadCall:
    """The request a frame after ``hello`` makes (an ``id`` that is not a string or int is None)."""
    try:
        frame = bounded_json.loads(text, max_bytes=MAX_FRAME_AFTER_HELLO)
    except bounded_json.JSONRefused as exc:
        return BadCall(None, f"frame refused: {exc}")
    if not isinstance(frame, dict) or frame.get("type") != "req":
        return BadCall(None, "expected a 'req' frame")
    req_id = frame.get("id")
    if not isinstance(req_id, str | int) or isinstance(req_id, bool):
        req_id = None
    method = frame.get("method")
    params = frame.get("params", {})
    if not isinstance(method, str) or not isinstance(params, dict):
        return BadCall(req_id, "method and params required")
    return Call(req_id, method, params)


def result_frame(req_id: RequestId, result: object) -> dict[str, Any]:
    return {"type": "res", "id": req_id, "ok": True, "result": result}


def error_frame(req_id: RequestId, code: str, message: str) -> dict[str, Any]:
    return {"type": "res", "id": req_id, "ok": False, "error": {"code": code, "message": message}}
