"""The device list tells devices apart: current last seen, twins replaced, sorting on the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from edge import create_app
from edge.cli.devices import devices
from edge.pairing.models import REVOKED, Role
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, Device, base_config, client_for, open_ws


def _ask(client: Any, device: Device) -> str:
    with open_ws(client) as ws:
        reply = device.handshake(ws, {"token": GATEWAY_TOKEN})
    assert reply["code"] == "PAIRING_REQUIRED"
    return str(reply["requestId"])


def _connect(client: Any, device: Device) -> dict[str, Any]:
    with open_ws(client) as ws:
        hello: dict[str, Any] = device.handshake(ws, {"token": GATEWAY_TOKEN})
    return hello


def test_the_listing_has_the_device_that_just_connected_and_the_gateway_clock(
    tmp_path: Path,
) -> None:
    app = create_app(base_config(tmp_path))
    phone = Device("phone")
    with (
        client_for(app, ("203.0.113.31", 4000)) as remote,
        client_for(app, LOOPBACK, base_url="http://localhost") as local,
    ):
        app.state.gateway.service.approve(_ask(remote, phone), actor="test")
        assert _connect(remote, phone)["type"] == "hello"
        listing = local.get("/api/devices").json()
    (device,) = [d for d in listing["devices"] if d["id"] == phone.id]
    assert device["lastSeenAt"] is not None and device["lastIp"] == "203.0.113.31"
    assert abs(listing["now"] - device["lastSeenAt"]) < 60_000


def test_approving_through_the_api_replaces_the_older_twin(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path))
    old, new = Device("Kitchen tablet"), Device("Kitchen tablet")
    with (
        client_for(app, ("203.0.113.32", 4000)) as remote,
        client_for(app, LOOPBACK, base_url="http://localhost") as local,
    ):
        app.state.gateway.service.approve(_ask(remote, old), actor="test", user="kitchen")
        assert _connect(remote, old)["type"] == "hello"
        request_id = _ask(remote, new)
        approved = local.post(
            f"/api/requests/{request_id}/approve", json={"role": "user", "replaces": old.id}
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["id"] == new.id and approved.json()["user"] == "kitchen"
        gone = remote.get("/api/whoami", headers={"authorization": f"Bearer {old.token}"})
        assert gone.json()["auth"]["state"] == "anonymous"
        listing = local.get("/api/devices").json()
    assert [d["id"] for d in listing["devices"] if d["status"] == "paired"] == [new.id]
    stored = app.state.gateway.service.store.get_device(old.id)
    assert stored is not None and stored.status == REVOKED


def test_a_replaced_device_that_does_not_exist_is_refused_and_nothing_is_approved(
    tmp_path: Path,
) -> None:
    app = create_app(base_config(tmp_path))
    with (
        client_for(app, ("203.0.113.33", 4000)) as remote,
        client_for(app, LOOPBACK, base_url="http://localhost") as local,
    ):
        request_id = _ask(remote, Device("laptop"))
        refused = local.post(
            f"/api/requests/{request_id}/approve", json={"replaces": "abcdef0123456789"}
        )
        assert refused.status_code == 404
        assert [r["id"] for r in local.get("/api/devices").json()["requests"]] == [request_id]


def test_devices_list_sorts_by_name_address_or_last_seen(tmp_path: Path) -> None:
    config_path = tmp_path / "edge.yaml"
    config_path.write_text(json.dumps(base_config(tmp_path)))
    app = create_app(base_config(tmp_path))
    named = {"b-phone": "203.0.113.9", "a-laptop": "203.0.113.10", "c-tablet": "198.51.100.2"}
    ids = {}
    for name, ip in named.items():
        device = Device(name)
        with client_for(app, (ip, 4000)) as client:
            app.state.gateway.service.approve(_ask(client, device), actor="test")
            assert _connect(client, device)["type"] == "hello"
        ids[name] = device.id
    app.state.gateway.service.flush_touches()

    def order(*options: str) -> list[str]:
        shown = CliRunner().invoke(
            devices, ["list", "--json", "--config", str(config_path), *options]
        )
        assert shown.exit_code == 0, shown.output
        by_id = {v: k for k, v in ids.items()}
        return [by_id[d["id"]] for d in json.loads(shown.output)["devices"]]

    assert order() == ["b-phone", "a-laptop", "c-tablet"]  # oldest paired first, as before
    assert order("--sort", "name") == ["a-laptop", "b-phone", "c-tablet"]
    assert order("--sort", "address") == ["c-tablet", "b-phone", "a-laptop"]
    assert order("--sort", "last-seen") == ["c-tablet", "a-laptop", "b-phone"]
    assert order("--sort", "name", "--reverse") == ["c-tablet", "b-phone", "a-laptop"]
    refused = CliRunner().invoke(
        devices, ["list", "--sort", "colour", "--config", str(config_path)]
    )
    assert refused.exit_code == 2


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_open_control_socket_keeps_its_device_seen_and_out_of_the_idle_sweep(
    tmp_path: Path,
) -> None:
    clock = Clock(time.time())
    hour = 3600.0
    app = create_app(base_config(tmp_path, pairing={"device_idle_expiry": hour}), clock=clock)
    gateway = app.state.gateway
    kiosk = Device("kiosk")
    with client_for(app, ("203.0.113.34", 4000)) as client:
        code = gateway.service.create_invite(role=Role.USER, name=None, ttl=600, actor="t")[1]
        with open_ws(client) as ws:
            assert kiosk.handshake(ws, {"invite": code})["type"] == "hello"
            clock.now += hour - 10
            gateway.hub.touch_connected(gateway.service.touch)  # what each sweep tick does
            touched_at = clock.now
            clock.now += 20  # past the hour since it connected, not since it was last seen
            gateway.service.sweep()
            (listed,) = gateway.service.list_devices()
            assert listed.id == kiosk.id and listed.last_seen_at == touched_at
            stored = gateway.store.get_device(kiosk.id)
            assert stored is not None and stored.last_seen_at == touched_at
