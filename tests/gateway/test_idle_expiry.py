"""Idle devices expire: ``pairing.device_idle_expiry`` removes what was not seen for that long.

The clock is the test's: ``PairingService(clock=...)`` decides what is idle,
so nothing here waits for time to pass. Last-seen times are batched in
memory and written by ``flush_touches``, never once per request.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.websockets import WebSocketDisconnect

from edge import create_app
from edge.cli.devices import devices
from edge.config import load_settings
from edge.config.policies import build_pairing_policy
from edge.gateway.protocol import connect_attempt
from edge.pairing.identity import DeviceKey
from edge.pairing.models import Role
from edge.pairing.service import Admitted, PairingService
from edge.pairing.store import Seen
from edge.pairing.store.sqlite import SqliteStore
from edge.refusals import Denial
from tests.conftest import GATEWAY_TOKEN, Device, base_config, client_for, open_ws

HOUR = 3600.0
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingStore(SqliteStore):
    """The SQLite store, counting the batched last-seen writes."""

    writes: list[dict[str, Seen]]

    def record_seen(self, seen: Any) -> None:
        self.writes.append(dict(seen))
        super().record_seen(seen)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    counting = CountingStore(tmp_path / "edge.sqlite3")
    counting.writes = []
    return counting


def clocked_service(store: Any, clock: Clock, idle_expiry: float | None = HOUR) -> PairingService:
    policy = build_pairing_policy(load_settings({"pairing": {"device_idle_expiry": idle_expiry}}))
    return PairingService(store, GATEWAY_TOKEN, policy, clock=clock)


def invite_pair(service: PairingService, key: DeviceKey, clock: Clock, ip: str) -> Admitted:
    _, code = service.create_invite(role=Role.USER, name=None, ttl=600, actor="test")
    device = key.device_field("n", "user", signed_at_ms=int(clock.now * 1000))
    outcome = service.connect(
        attempt=connect_attempt({"auth": {"invite": code}, "device": device}),
        nonce="n",
        client_ip=ip,
        local=False,
        user_agent=None,
    )
    assert isinstance(outcome, Admitted)
    return outcome


# -- the domain, with the test's clock ------------------------------------------------------------


def test_a_device_idle_longer_than_the_limit_is_removed_with_an_event(
    store: CountingStore,
) -> None:
    clock = Clock(T0)
    service = clocked_service(store, clock)
    idle, busy = DeviceKey.generate(), DeviceKey.generate()
    invite_pair(service, idle, clock, "203.0.113.1")
    busy_token = invite_pair(service, busy, clock, "203.0.113.2").device_token
    service.flush_touches()
    seq = service.latest_seq()

    clock.now = T0 + HOUR / 2
    assert service.authenticate_token(busy_token, client_ip="203.0.113.22") is not None
    clock.now = T0 + HOUR - 1
    service.sweep()
    assert {d.id for d in service.list_devices()} == {idle.device_id, busy.device_id}

    clock.now = T0 + HOUR + 1
    service.sweep()
    assert [d.id for d in service.list_devices()] == [busy.device_id]
    (expired,) = [e for e in service.events_after(seq) if e.type == "device.expired"]
    assert expired.data["device_id"] == idle.device_id
    assert expired.data["last_seen_at"] == T0 and expired.at == T0 + HOUR + 1
    assert not any("token" in key or "hash" in key for key in expired.data)
    survivor = store.get_device(busy.device_id)
    assert survivor is not None and survivor.last_seen_at == T0 + HOUR / 2
    assert survivor.last_ip == "203.0.113.22"

    clock.now = T0 + HOUR / 2 + HOUR + 1
    service.sweep()
    assert service.list_devices() == []
    assert service.authenticate_token(busy_token) is Denial.DEVICE_TOKEN_INVALID


def test_a_device_that_never_connected_after_approval_expires_from_its_approval(
    store: CountingStore,
) -> None:
    clock = Clock(T0)
    service = clocked_service(store, clock)
    key = DeviceKey.generate()
    invite_pair(service, key, clock, "203.0.113.1")
    service.flush_touches()
    store.backend.transact(  # as a device approved but never seen
        "forget the last-seen time",
        T0,
        lambda tx: tx.conn.execute("UPDATE devices SET last_seen_at = NULL"),
    )
    clock.now = T0 + HOUR - 1
    service.sweep()
    assert len(service.list_devices()) == 1
    clock.now = T0 + HOUR + 1
    service.sweep()
    assert service.list_devices() == []


def test_without_a_limit_nothing_expires(store: CountingStore) -> None:
    clock = Clock(T0)
    service = clocked_service(store, clock, idle_expiry=None)
    invite_pair(service, DeviceKey.generate(), clock, "203.0.113.1")
    clock.now = T0 + 10 * 365 * 86_400
    service.sweep()
    assert len(service.list_devices()) == 1


def test_last_seen_is_batched_one_write_per_flush_not_per_request(store: CountingStore) -> None:
    clock = Clock(T0)
    service = clocked_service(store, clock)
    token = invite_pair(service, DeviceKey.generate(), clock, "203.0.113.1").device_token
    service.flush_touches()
    store.writes.clear()
    for second in range(200):
        clock.now = T0 + second
        assert service.authenticate_token(token, client_ip=f"198.51.100.{second % 3}") is not None
    assert store.writes == []
    service.flush_touches()
    service.flush_touches()  # nothing new: no write
    (batch,) = store.writes
    (seen,) = batch.values()
    assert seen == Seen(T0 + 199, "198.51.100.1")


def test_a_failed_flush_keeps_the_touches_for_the_next_one(store: CountingStore) -> None:
    clock = Clock(T0)
    service = clocked_service(store, clock)
    key = DeviceKey.generate()
    token = invite_pair(service, key, clock, "203.0.113.1").device_token
    service.flush_touches()
    clock.now = T0 + 60
    service.authenticate_token(token, client_ip="203.0.113.9")
    store.close()
    with pytest.raises(Exception, match="closed"):
        service.flush_touches()
    reopened = CountingStore(store.path)
    reopened.writes = []
    service.store = reopened
    service.flush_touches()
    device = reopened.get_device(key.device_id)
    assert device is not None and device.last_seen_at == T0 + 60 and device.last_ip == "203.0.113.9"


# -- through the gateway ------------------------------------------------------------------------


def test_expiry_closes_the_sockets_of_the_idle_device_only(tmp_path: Path) -> None:
    clock = Clock(time.time())
    app = create_app(base_config(tmp_path, pairing={"device_idle_expiry": HOUR}), clock=clock)
    gateway = app.state.gateway
    idle, busy = Device("idle tablet"), Device("busy kiosk")
    with client_for(app) as client:
        codes = [
            gateway.service.create_invite(role=Role.USER, name=None, ttl=600, actor="test")[1]
            for _ in range(2)
        ]
        with open_ws(client) as idle_ws, open_ws(client) as busy_ws:
            assert idle.handshake(idle_ws, {"invite": codes[0]})["type"] == "hello"
            assert busy.handshake(busy_ws, {"invite": codes[1]})["type"] == "hello"
            clock.now += HOUR / 2
            seen = client.get("/api/whoami", headers={"authorization": f"Bearer {busy.token}"})
            assert seen.json()["auth"]["state"] == "paired"
            clock.now += HOUR / 2 + 1
            gateway.service.sweep()
            with pytest.raises(WebSocketDisconnect) as closed:
                for _ in range(20):
                    idle_ws.receive_json()
            assert (closed.value.code, closed.value.reason) == (1008, "device revoked")
            busy_ws.send_text(json.dumps({"type": "req", "id": 1, "method": "self.whoami"}))
            while (reply := busy_ws.receive_json())["type"] != "res":
                pass
            assert reply["ok"] and reply["result"]["id"] == busy.id
        gone = client.get("/api/whoami", headers={"authorization": f"Bearer {idle.token}"})
        assert gone.json()["auth"]["state"] == "anonymous"
        metrics = client_for(app, ("127.0.0.1", 5000), "http://localhost").get("/metrics").text
    assert 'edge_pairing_events_total{event="expired"} 1.0' in metrics
    assert [d.id for d in gateway.service.list_devices()] == [busy.id]


# -- edge devices list ------------------------------------------------------------------------------


def test_devices_list_shows_when_each_device_expires_and_what_expired(tmp_path: Path) -> None:
    config_path = tmp_path / "edge.yaml"
    config = base_config(tmp_path, pairing={"device_idle_expiry": 90 * 86_400})
    config_path.write_text(json.dumps(config))  # JSON is YAML
    store = SqliteStore(tmp_path / "data" / "edge.sqlite3")
    now = time.time()
    clock = Clock(now - 100 * 86_400)
    service = clocked_service(store, clock, idle_expiry=90 * 86_400)
    old, recent = DeviceKey.generate(), DeviceKey.generate()
    invite_pair(service, old, clock, "203.0.113.1")
    clock.now = now - 2 * 86_400
    invite_pair(service, recent, clock, "203.0.113.2")
    service.flush_touches()
    clock.now = now - 3600
    service.sweep()
    store.close()

    runner = CliRunner()
    shown = runner.invoke(devices, ["list", "--config", str(config_path)])
    assert shown.exit_code == 0, shown.output
    paired_table = shown.output[shown.output.index("Paired devices") :]
    assert "EXPIRES" in paired_table and "in 87d" in paired_table
    assert "Removed for being idle" in shown.output and old.device_id[:12] in shown.output
    assert "last seen 100d ago" in shown.output

    listed = runner.invoke(devices, ["list", "--json", "--config", str(config_path)])
    data = json.loads(listed.output)
    (device,) = data["devices"]
    assert device["id"] == recent.device_id
    assert device["idleExpiresAt"] == int((now - 2 * 86_400 + 90 * 86_400) * 1000)
    (expired,) = data["expired"]
    assert expired["id"] == old.device_id and expired["role"] == "user"
    assert expired["lastSeenAt"] == int((now - 100 * 86_400) * 1000)


def test_devices_list_has_no_expiry_column_without_a_limit(tmp_path: Path) -> None:
    config_path = tmp_path / "edge.yaml"
    config_path.write_text(json.dumps(base_config(tmp_path)))
    shown = CliRunner().invoke(devices, ["list", "--config", str(config_path)])
    assert shown.exit_code == 0, shown.output
    paired_table = shown.output[shown.output.index("Paired devices") :]
    assert "EXPIRES" not in paired_table and "Removed for being idle" not in paired_table
