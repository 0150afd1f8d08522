"""``Remote-User`` is a login an operator controls, never the name a device chose.

A device that calls itself ``admin`` must reach upstreams (forward-auth answers
and Edge's own forwarding) as the user an operator assigned to it, or as its
device id; the chosen name travels only as ``Remote-Name``. Users are assigned
at approval (REST, socket, CLI) or later, validated, and shared by devices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from edge import create_app
from edge.cli import cli
from edge.pairing.service import InvalidValue
from tests.conftest import GATEWAY_TOKEN, REMOTE, Device, base_config, client_for, open_ws
from tests.gateway.test_forward_auth_endpoints import PROXY, proxied

ADMIN_JSON = {"content-type": "application/json"}


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return create_app(base_config(tmp_path, proxy={"trusted_proxies": ["127.0.0.1"]}))


def ask(app: Any, device: Device, role: str = "user") -> str:
    with client_for(app, REMOTE) as client, open_ws(client) as ws:
        reply = device.handshake(ws, {"token": GATEWAY_TOKEN}, role=role)
    assert reply["code"] == "PAIRING_REQUIRED"
    return str(reply["requestId"])


def connect(app: Any, device: Device, role: str = "user") -> str:
    with client_for(app, REMOTE) as client, open_ws(client) as ws:
        hello = device.handshake(ws, {"token": GATEWAY_TOKEN}, role=role)
    assert hello["type"] == "hello", hello
    return str(hello["deviceToken"])


def admin_token(app: Any) -> str:
    admin = Device("ops console")
    app.state.gateway.service.approve(ask(app, admin, "admin"), actor="test")
    return connect(app, admin, "admin")


def forward_auth(app: Any, token: str) -> Any:
    with TestClient(app, client=PROXY, base_url="http://127.0.0.1:18789") as client:
        response = client.get(
            "/auth/nginx", headers=proxied({"authorization": f"Bearer {token}", "remote-user": "x"})
        )
    assert response.status_code == 200
    return response.headers


def test_a_device_named_admin_is_its_assigned_user_to_forward_auth(app: Any) -> None:
    impostor = Device("admin")
    app.state.gateway.service.approve(ask(app, impostor), actor="test", user="alice")
    headers = forward_auth(app, connect(app, impostor))
    assert headers["remote-user"] == "alice"
    assert headers["remote-name"] == "admin"
    assert headers["remote-groups"] == "user"
    assert headers["x-edge-device-id"] == impostor.id


def test_without_a_user_remote_user_is_the_device_id(app: Any) -> None:
    impostor = Device("admin")
    app.state.gateway.service.approve(ask(app, impostor), actor="test")
    headers = forward_auth(app, connect(app, impostor))
    assert headers["remote-user"] == impostor.id
    assert headers["remote-name"] == "admin"


def test_rest_approve_with_a_user_and_assign_later(app: Any) -> None:
    bearer = {"authorization": f"Bearer {admin_token(app)}", **ADMIN_JSON}
    laptop, phone = Device("admin"), Device("phone")
    with client_for(app, REMOTE) as client:
        approved = client.post(
            f"/api/requests/{ask(app, laptop)}/approve", json={"user": "alice"}, headers=bearer
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["user"] == "alice"
        client.post(f"/api/requests/{ask(app, phone)}/approve", json={}, headers=bearer)
        shared = client.post(
            f"/api/devices/{phone.id}/assign", json={"user": "alice"}, headers=bearer
        )
        assert shared.status_code == 200 and shared.json()["user"] == "alice"
        listed = {
            d["id"]: d["user"] for d in client.get("/api/devices", headers=bearer).json()["devices"]
        }
        assert listed[laptop.id] == listed[phone.id] == "alice"  # one person, two devices
        cleared = client.post(
            f"/api/devices/{phone.id}/assign", json={"user": None}, headers=bearer
        )
        assert cleared.status_code == 200 and cleared.json()["user"] is None
    assert forward_auth(app, connect(app, laptop))["remote-user"] == "alice"
    assert forward_auth(app, connect(app, phone))["remote-user"] == phone.id


@pytest.mark.parametrize("bad", ["Alice", "", " alice", "-alice", "a" * 65, "al ice", "al/ice", 7])
def test_malformed_users_are_refused_with_the_rule(app: Any, bad: object) -> None:
    bearer = {"authorization": f"Bearer {admin_token(app)}", **ADMIN_JSON}
    device = Device("laptop")
    request_id = ask(app, device)
    with client_for(app, REMOTE) as client:
        if bad != "":  # an empty user at approval means "none"
            refused = client.post(
                f"/api/requests/{request_id}/approve", json={"user": bad}, headers=bearer
            )
            assert refused.status_code == 400
            assert "a-z, 0-9" in refused.json()["detail"]
        client.post(f"/api/requests/{request_id}/approve", json={}, headers=bearer)
        refused = client.post(
            f"/api/devices/{device.id}/assign", json={"user": bad}, headers=bearer
        )
    assert refused.status_code == 400
    assert refused.json()["error"] == "bad_request"
    assert app.state.gateway.service.find_device(device.id).user is None


def test_assign_needs_the_user_key(app: Any) -> None:
    bearer = {"authorization": f"Bearer {admin_token(app)}", **ADMIN_JSON}
    device = Device("laptop")
    app.state.gateway.service.approve(ask(app, device), actor="test")
    with client_for(app, REMOTE) as client:
        refused = client.post(f"/api/devices/{device.id}/assign", json={}, headers=bearer)
    assert refused.status_code == 400 and "null to clear" in refused.json()["detail"]


def test_a_user_device_cannot_assign_users(app: Any) -> None:
    device = Device("laptop")
    app.state.gateway.service.approve(ask(app, device), actor="test")
    token = connect(app, device)
    with client_for(app, REMOTE) as client:
        refused = client.post(
            f"/api/devices/{device.id}/assign",
            json={"user": "root"},
            headers={"authorization": f"Bearer {token}", **ADMIN_JSON},
        )
    assert refused.status_code == 403
    assert app.state.gateway.service.find_device(device.id).user is None


def test_the_socket_approve_takes_a_user(app: Any) -> None:
    admin = Device("ops console")
    app.state.gateway.service.approve(ask(app, admin, "admin"), actor="test")
    device = Device("admin")
    request_id = ask(app, device)
    with client_for(app, REMOTE) as client, open_ws(client) as ws:
        hello = admin.handshake(ws, {"token": GATEWAY_TOKEN}, role="admin")
        assert hello["type"] == "hello"
        ws.send_json(
            {
                "type": "req",
                "id": "1",
                "method": "devices.approve",
                "params": {"requestId": request_id, "user": "dana"},
            }
        )
        while (frame := ws.receive_json())["type"] != "res":
            pass
    assert frame["ok"] is True and frame["result"]["user"] == "dana"


def test_service_refuses_a_malformed_user(app: Any) -> None:
    from edge.pairing.models import valid_user

    assert valid_user("alice@example.com") == "alice@example.com"
    assert valid_user("a") == "a"
    for bad in ("Alice", "_a", "", "a" * 65, None):
        assert valid_user(bad) is None
    with pytest.raises(InvalidValue, match="is not a user name"):
        app.state.gateway.service.approve(ask(app, Device("x")), actor="t", user="Not Valid")


def test_cli_approve_with_user_and_assign(tmp_path: Path) -> None:
    import yaml

    config = base_config(tmp_path)
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    app = create_app(config)
    device = Device("admin")
    request_id = ask(app, device)
    runner = CliRunner()
    env = {"EDGE_CONFIG": None, "EDGE_GATEWAY_TOKEN": None}
    approved = runner.invoke(
        cli, ["devices", "approve", request_id, "--user", "alice", "-c", str(path)], env=env
    )
    assert approved.exit_code == 0, approved.output
    assert "user alice" in approved.output
    bad = runner.invoke(cli, ["devices", "assign", device.id, "Alice", "-c", str(path)], env=env)
    assert bad.exit_code == 1 and "a-z, 0-9" in bad.output
    moved = runner.invoke(
        cli, ["devices", "assign", device.id[:8], "bob", "-c", str(path)], env=env
    )
    assert moved.exit_code == 0 and "is user bob" in moved.output
    listed = runner.invoke(cli, ["devices", "list", "--json", "-c", str(path)], env=env)
    assert [d["user"] for d in json.loads(listed.output)["devices"]] == ["bob"]
    cleared = runner.invoke(cli, ["devices", "assign", device.id, "-", "-c", str(path)], env=env)
    assert cleared.exit_code == 0 and "device id" in cleared.output
