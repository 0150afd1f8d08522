"""The control socket ``/ws``: every close reason of the contract, through the ASGI app.

The real-server variants (where uvicorn must carry code and reason to a real
client) live in tests/integration.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from edge import create_app
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, base_config, client_for, open_ws


def next_res(ws: Any) -> dict[str, Any]:
    """The next answer frame, skipping events pushed meanwhile (e.g. ``device.paired``)."""
    while True:
        frame: dict[str, Any] = ws.receive_json()
        if frame.get("type") == "res":
            return frame


def closed_with(ws: Any) -> tuple[int, str]:
    """Read until the server closes; return (code, reason)."""
    with pytest.raises(WebSocketDisconnect) as info:
        for _ in range(20):
            ws.receive_json()
    return info.value.code, info.value.reason


def attempt(
    app: Any,
    device: Device,
    auth: dict[str, str],
    *,
    role: str = "user",
    address: tuple[str, int] = REMOTE,
    headers: dict[str, str] | None = None,
    base_url: str = "http://edge.example.com",
) -> tuple[dict[str, Any], tuple[int, str] | None]:
    with client_for(app, address, base_url) as client, open_ws(client, headers) as ws:
        reply = device.handshake(ws, auth, role)
        if reply.get("type") == "hello":
            return reply, None
        if reply.get("type") == "error":
            return reply, closed_with(ws)
        return reply, None


def refused(app: Any, device: Device, auth: dict[str, str], **kwargs: Any) -> tuple[int, str]:
    with client_for(app, kwargs.pop("address", REMOTE)) as client, open_ws(client) as ws:
        challenge = ws.receive_json()
        frame = device.connect_frame(challenge["nonce"], auth, kwargs.get("role", "user"))
        ws.send_text(json.dumps(frame))
        return closed_with(ws)


def pair(app: Any, device: Device, role: str = "user") -> str:
    reply, close = attempt(app, device, {"token": GATEWAY_TOKEN}, role=role)
    assert reply["code"] == "PAIRING_REQUIRED" and close == (1008, "pairing required")
    app.state.gateway.service.approve(reply["requestId"], actor="test")
    hello, _ = attempt(app, device, {"token": GATEWAY_TOKEN}, role=role)
    assert hello["type"] == "hello"
    return str(hello["deviceToken"])


def test_challenge_carries_a_fresh_32_byte_nonce(app: Any) -> None:
    with client_for(app) as client:
        with open_ws(client) as ws:
            first = ws.receive_json()
        with open_ws(client) as ws:
            second = ws.receive_json()
    assert first["type"] == "challenge" and isinstance(first["ts"], int)
    assert len(first["nonce"]) == 43 and first["nonce"] != second["nonce"]


def test_local_client_is_auto_approved_as_admin(app: Any, device: Device) -> None:
    hello, _ = attempt(app, device, {}, address=LOOPBACK, base_url="http://localhost:18789")
    assert hello["type"] == "hello"
    assert hello["device"]["role"] == "admin"
    assert hello["client"] == {"ip": "127.0.0.1", "local": True}
    assert len(hello["deviceToken"]) == 43


def test_remote_without_token_is_gateway_token_missing(app: Any, device: Device) -> None:
    assert refused(app, device, {}) == (1008, "unauthorized: gateway token missing")


def test_wrong_gateway_token_is_mismatch(app: Any, device: Device) -> None:
    assert refused(app, device, {"token": "not-the-token"}) == (
        1008,
        "unauthorized: gateway token mismatch",
    )


def test_gateway_token_on_unknown_device_creates_request_then_pairs_after_approval(
    app: Any, device: Device
) -> None:
    reply, close = attempt(app, device, {"token": GATEWAY_TOKEN})
    assert reply["type"] == "error" and reply["code"] == "PAIRING_REQUIRED"
    assert reply["reason"] == "not-paired"
    assert len(reply["requestId"]) == 9 and reply["requestId"][4] == "-"
    assert close == (1008, "pairing required")
    again, _ = attempt(app, device, {"token": GATEWAY_TOKEN})
    assert again["requestId"] == reply["requestId"]  # one pending request per device
    app.state.gateway.service.approve(reply["requestId"], actor="test")
    hello, _ = attempt(app, device, {"token": GATEWAY_TOKEN})
    assert hello["type"] == "hello" and hello["device"]["role"] == "user"
    with_token, _ = attempt(app, device, {"deviceToken": hello["deviceToken"]})
    assert with_token["type"] == "hello"
    assert with_token["deviceToken"] == hello["deviceToken"]


def test_role_upgrade_needs_a_new_approval(app: Any, device: Device) -> None:
    token = pair(app, device, "user")
    reply, close = attempt(app, device, {"deviceToken": token}, role="admin")
    assert reply["code"] == "PAIRING_REQUIRED" and reply["reason"] == "role-upgrade"
    assert close == (1008, "pairing required")


def test_invalid_device_token_is_refused(app: Any, device: Device) -> None:
    assert refused(app, device, {"deviceToken": "bogus"}) == (
        1008,
        "unauthorized: device token invalid",
    )


def test_device_token_of_another_device_is_identity_mismatch(app: Any) -> None:
    owner, thief = Device("owner"), Device("thief")
    token = pair(app, owner)
    assert refused(app, thief, {"deviceToken": token}) == (1008, "device identity mismatch")


def test_revoked_device_token_is_device_revoked(app: Any, device: Device) -> None:
    token = pair(app, device)
    app.state.gateway.service.revoke(device.id, actor="test")
    assert refused(app, device, {"deviceToken": token}) == (1008, "device revoked")


def test_rotated_away_token_is_invalid(app: Any, device: Device) -> None:
    token = pair(app, device)
    app.state.gateway.service.rotate_token(device.id, actor="test")
    assert refused(app, device, {"deviceToken": token}) == (
        1008,
        "unauthorized: device token invalid",
    )


def _send_raw(app: Any, payload: str | bytes, address: tuple[str, int] = REMOTE) -> tuple[int, str]:
    with client_for(app, address) as client, open_ws(client) as ws:
        ws.receive_json()
        if isinstance(payload, bytes):
            ws.send_bytes(payload)
        else:
            ws.send_text(payload)
        return closed_with(ws)


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[]",
        '{"type":"hello"}',
        '{"type":"connect","auth":"token"}',
        b"\x00\x01binary",
        "null",
    ],
    ids=["not_json", "array", "wrong_type", "auth_not_object", "binary_frame", "null"],
)
def test_malformed_connect_frames_are_invalid_handshake(app: Any, payload: str | bytes) -> None:
    assert _send_raw(app, payload) == (1008, "invalid handshake")


def test_missing_device_is_identity_required(app: Any) -> None:
    frame = {"type": "connect", "auth": {"token": GATEWAY_TOKEN}, "role": "user"}
    assert _send_raw(app, json.dumps(frame)) == (1008, "device identity required")


def test_signature_for_another_nonce_is_invalid(app: Any, device: Device) -> None:
    with client_for(app) as client, open_ws(client) as ws:
        ws.receive_json()
        frame = device.connect_frame("a-different-nonce", {"token": GATEWAY_TOKEN})
        ws.send_text(json.dumps(frame))
        assert closed_with(ws) == (1008, "device signature invalid")


def test_replayed_signature_on_a_new_connection_is_invalid(app: Any, device: Device) -> None:
    with client_for(app) as client:
        with open_ws(client) as ws:
            nonce = ws.receive_json()["nonce"]
            captured = device.connect_frame(nonce, {"token": GATEWAY_TOKEN})
        with open_ws(client) as ws:
            ws.receive_json()
            ws.send_text(json.dumps(captured))
            assert closed_with(ws) == (1008, "device signature invalid")


def test_stale_signed_at_is_expired(app: Any, device: Device) -> None:
    with client_for(app) as client, open_ws(client) as ws:
        nonce = ws.receive_json()["nonce"]
        frame = device.connect_frame(nonce, {"token": GATEWAY_TOKEN})
        frame["device"] = device.key.device_field(
            nonce, "user", signed_at_ms=int(time.time() * 1000) - 300_000
        )
        ws.send_text(json.dumps(frame))
        assert closed_with(ws) == (1008, "device signature expired")


def test_id_not_matching_the_key_is_identity_mismatch(app: Any, device: Device) -> None:
    with client_for(app) as client, open_ws(client) as ws:
        nonce = ws.receive_json()["nonce"]
        frame = device.connect_frame(nonce, {"token": GATEWAY_TOKEN})
        frame["device"]["id"] = "0" * 64
        ws.send_text(json.dumps(frame))
        assert closed_with(ws) == (1008, "device identity mismatch")


def test_foreign_origin_is_refused_after_accept(app: Any, device: Device) -> None:
    with client_for(app) as client, open_ws(client, {"origin": "https://evil.example"}) as ws:
        assert closed_with(ws) == (1008, "origin not allowed")


def test_same_origin_and_configured_origins_are_allowed(tmp_path: Path, device: Device) -> None:
    app = create_app(base_config(tmp_path, auth={"allowed_origins": ["https://ops.example.com"]}))
    for origin in ("http://edge.example.com", "https://ops.example.com"):
        reply, _ = attempt(app, device, {"token": GATEWAY_TOKEN}, headers={"origin": origin})
        assert reply["code"] == "PAIRING_REQUIRED", origin


def test_loopback_origin_is_allowed_for_local_clients_only(app: Any, device: Device) -> None:
    hello, _ = attempt(
        app,
        device,
        {},
        address=LOOPBACK,
        base_url="http://localhost:18789",
        headers={"origin": "http://localhost:18789"},
    )
    assert hello["type"] == "hello"
    with (
        client_for(app, REMOTE) as client,
        open_ws(client, {"origin": "http://localhost:18789"}) as ws,
    ):
        assert closed_with(ws) == (1008, "origin not allowed")


def test_another_loopback_port_is_cross_site_even_for_a_local_client(app: Any) -> None:
    for origin in ("http://localhost:3000", "http://127.0.0.1:18789", "https://localhost:18789"):
        with (
            client_for(app, LOOPBACK, base_url="http://localhost:18789") as client,
            open_ws(client, {"origin": origin}) as ws,
        ):
            assert closed_with(ws) == (1008, "origin not allowed"), origin


def test_handshake_timeout(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path, pairing={"handshake_timeout": 0.2}))
    with client_for(app) as client, open_ws(client) as ws:
        ws.receive_json()
        assert closed_with(ws) == (1008, "handshake timeout")


def test_frame_over_64_kib_before_hello_closes_1009(app: Any) -> None:
    code, _ = _send_raw(app, "x" * (64 * 1024 + 1))
    assert code == 1009


def test_failed_attempts_lock_the_address_out_but_not_others(app: Any) -> None:
    for _ in range(10):
        assert refused(app, Device(), {"token": "guess"}) == (
            1008,
            "unauthorized: gateway token mismatch",
        )
    assert refused(app, Device(), {"token": GATEWAY_TOKEN}) == (
        1008,
        "unauthorized: too many failed attempts",
    )
    reply, _ = attempt(app, Device(), {"token": GATEWAY_TOKEN}, address=("198.51.100.20", 1))
    assert reply["code"] == "PAIRING_REQUIRED"


def test_unauthenticated_sockets_per_address_are_capped(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path, pairing={"max_unauthenticated_sockets_per_client": 2}))
    with client_for(app) as client, open_ws(client) as first, open_ws(client) as second:
        first.receive_json()
        second.receive_json()
        with open_ws(client) as third:
            assert closed_with(third) == (1008, "unauthorized: too many failed attempts")


def test_revocation_closes_the_live_socket(app: Any, device: Device) -> None:
    token = pair(app, device)
    with client_for(app) as client, open_ws(client) as ws:
        assert device.handshake(ws, {"deviceToken": token})["type"] == "hello"
        app.state.gateway.service.revoke(device.id, actor="test")
        assert closed_with(ws) == (1008, "device revoked")


def test_admin_socket_receives_pairing_events_and_can_approve(app: Any) -> None:
    admin, newcomer = Device("admin"), Device("newcomer")
    with client_for(app, LOOPBACK, "http://localhost:18789") as client, open_ws(client) as ws:
        assert admin.handshake(ws, {})["type"] == "hello"
        remote = client_for(app, REMOTE)  # not entered: a second lifespan would stop the gateway
        with open_ws(remote) as other:
            reply = newcomer.handshake(other, {"token": GATEWAY_TOKEN})
        event = ws.receive_json()
        while event.get("event") != "pairing.requested":
            event = ws.receive_json()
        assert (
            event["data"]["requestId"] == reply["requestId"]
            or event["data"].get("id") == reply["requestId"]
        )
        ws.send_text(
            json.dumps(
                {
                    "type": "req",
                    "id": 1,
                    "method": "devices.approve",
                    "params": {"requestId": reply["requestId"], "role": "user"},
                }
            )
        )
        res = next_res(ws)
        assert res == {"type": "res", "id": 1, "ok": True, "result": res["result"]}
        assert res["result"]["name"] == "newcomer"
        ws.send_text(json.dumps({"type": "req", "id": 2, "method": "devices.list", "params": {}}))
        listing = next_res(ws)
        assert {d["name"] for d in listing["result"]["devices"]} == {"admin", "newcomer"}


def test_user_device_cannot_call_admin_methods(app: Any, device: Device) -> None:
    token = pair(app, device)
    with client_for(app) as client, open_ws(client) as ws:
        device.handshake(ws, {"deviceToken": token})
        ws.send_text(json.dumps({"type": "req", "id": "a", "method": "devices.list", "params": {}}))
        res = next_res(ws)
    assert res["ok"] is False and res["error"]["code"] == "forbidden"


def test_bad_frames_after_hello_get_errors_not_a_crash(app: Any, device: Device) -> None:
    with client_for(app, LOOPBACK, "http://localhost:18789") as client, open_ws(client) as ws:
        device.handshake(ws, {})
        for frame in (
            "nope",
            "[1]",
            '{"type":"req","id":1}',
            '{"type":"req","id":2,"method":"x.y","params":{}}',
        ):
            ws.send_text(frame)
            res = next_res(ws)
            assert res["ok"] is False
        ws.send_text(json.dumps({"type": "req", "id": 3, "method": "devices.list", "params": {}}))
        assert next_res(ws)["ok"] is True
