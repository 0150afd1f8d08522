"""DNS rebinding: a name the attacker controls, pointed at 127.0.0.1, never makes a client local.

A browser tricked into talking to the gateway through ``attacker.example``
still sends ``Host: attacker.example`` (and its own Origin); the locality
rules read both, so such a request is anonymous however loopback its peer is.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from edge import create_app
from tests.conftest import LOOPBACK, Device, base_config, client_for, open_ws


@pytest.fixture
def app(tmp_path: Any) -> Any:
    return create_app(
        base_config(tmp_path, local={"networks": ["192.168.0.0/16"]}, logging={"level": "warning"})
    )


@pytest.mark.parametrize(
    ("base_url", "headers", "local"),
    [
        ("http://127.0.0.1:18789", {}, True),
        ("http://localhost:18789", {"origin": "http://localhost:18789"}, True),
        ("http://attacker.example", {}, False),
        ("http://attacker.example:18789", {"origin": "http://attacker.example:18789"}, False),
        ("http://localhost:18789", {"origin": "http://attacker.example"}, False),
        ("http://127.0.0.1:18789", {"origin": "null"}, False),
        ("http://127.0.0.1.nip.io", {}, False),
    ],
    ids=[
        "loopback ip",
        "localhost page",
        "rebound name",
        "rebound name and origin",
        "foreign origin",
        "opaque origin",
        "name resolving to loopback",
    ],
)
def test_only_local_names_make_a_loopback_client_local(
    app: Any, base_url: str, headers: dict[str, str], local: bool
) -> None:
    with client_for(app, LOOPBACK, base_url) as client:
        whoami = client.get("/api/whoami", headers=headers).json()
        devices = client.get("/api/devices", headers=headers)
    assert whoami["local"] is local
    assert whoami["auth"]["state"] == ("local" if local else "anonymous")
    assert devices.status_code == (200 if local else 401)


@pytest.mark.parametrize(
    ("base_url", "local"),
    [("http://192.168.1.10:18789", True), ("http://gateway.example", False)],
    ids=["ip literal host", "domain name host"],
)
def test_a_local_network_client_must_name_the_gateway_by_address(
    app: Any, base_url: str, local: bool
) -> None:
    with client_for(app, ("192.168.1.77", 5000), base_url) as client:
        assert client.get("/api/whoami").json()["local"] is local


def test_a_rebound_name_gets_no_hello_on_the_control_socket(app: Any) -> None:
    device = Device("rebinding page")
    with client_for(app, LOOPBACK, "http://attacker.example") as client, open_ws(client) as ws:
        challenge = ws.receive_json()
        ws.send_json(device.connect_frame(challenge["nonce"], {}, "admin"))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (1008, "unauthorized: gateway token missing")


def test_a_foreign_origin_on_a_local_name_is_refused_before_the_challenge(app: Any) -> None:
    with (
        client_for(app, LOOPBACK, "http://localhost:18789") as client,
        open_ws(client, {"origin": "http://attacker.example"}) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (1008, "origin not allowed")
