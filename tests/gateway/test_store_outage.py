"""While the pairing store is unreachable: clear 503s and a 1013 retry, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from edge.pairing.store import StoreError
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, client_for, open_ws


def _down(*args: Any, **kwargs: Any) -> Any:
    raise StoreError("redis://127.0.0.1:6379/0 is unreachable")


def test_bearer_check_during_an_outage_is_503_with_retry_after(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.state.gateway.service, "authenticate_token", _down)
    with client_for(app, REMOTE) as client:
        response = client.get("/api/devices", headers={"authorization": "Bearer some-device-token"})
    assert response.status_code == 503
    assert response.json()["reason"] == "store_unavailable"
    assert response.headers["retry-after"] == "2"


def test_management_call_during_an_outage_is_503(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.state.gateway.service, "list_devices", _down)
    with client_for(app, LOOPBACK, "http://localhost:18789") as client:
        response = client.get("/api/devices")
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"


def test_handshake_during_an_outage_closes_1013_try_again(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.state.gateway.service, "connect", _down)
    device = Device()
    with client_for(app, REMOTE) as client, open_ws(client) as ws:
        challenge = ws.receive_json()
        ws.send_json(device.connect_frame(challenge["nonce"], {"token": GATEWAY_TOKEN}))
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
    assert info.value.code == 1013
