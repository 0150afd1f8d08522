"""The control socket authenticates a paired browser by its HttpOnly session cookie.

The dashboard keeps no token where page script can read it: it reconnects with
``auth: {}``, its device key and the cookie on the upgrade request. The device
signature is still required, and the hello then carries no token.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.conftest import REMOTE, Device, client_for, open_ws
from tests.gateway.test_http import pair_remote


def cookie_for(app: Any, token: str) -> str:
    with client_for(app, REMOTE) as client:
        response = client.post("/api/session", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200
    return f"theme=dark; edge_session={response.cookies['edge_session']}"


def connect_with_cookie(app: Any, device: Device, cookie: str | None) -> Any:
    headers = {"cookie": cookie} if cookie else {}
    with client_for(app, REMOTE) as client, open_ws(client, headers) as ws:
        challenge = ws.receive_json()
        ws.send_text(json.dumps(device.connect_frame(challenge["nonce"], {}, "user")))
        try:
            return ws.receive_json()
        except WebSocketDisconnect as closed:
            return {"type": "closed", "reason": closed.reason}


def test_the_cookie_stands_in_for_the_device_token_and_is_not_echoed(
    app: Any, device: Device
) -> None:
    cookie = cookie_for(app, pair_remote(app, device))
    hello = connect_with_cookie(app, device, cookie)
    assert hello["type"] == "hello"
    assert hello["device"]["id"] == device.id
    assert "deviceToken" not in hello  # page script never sees the cookie's value


def test_the_cookie_without_the_devices_key_is_refused(app: Any, device: Device) -> None:
    cookie = cookie_for(app, pair_remote(app, device))
    thief = Device("thief")  # a key of its own: the cookie is not its credential
    assert connect_with_cookie(app, thief, cookie) == {
        "type": "closed",
        "reason": "unauthorized: gateway token missing",
    }
    assert connect_with_cookie(app, device, cookie)["type"] == "hello"


@pytest.mark.parametrize(
    ("cookie", "reason"),
    [
        (None, "unauthorized: gateway token missing"),
        ("edge_session=not-a-device-token", "unauthorized: gateway token missing"),
    ],
)
def test_no_or_a_bad_cookie_is_no_credential(
    app: Any, device: Device, cookie: str | None, reason: str
) -> None:
    pair_remote(app, device)
    assert connect_with_cookie(app, device, cookie) == {"type": "closed", "reason": reason}
