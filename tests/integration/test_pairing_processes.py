"""Pairing across processes: two gateways on one SQLite store, the CLI, kill -9, the logs."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import GATEWAY_TOKEN, Device
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

PROXIED = {"proxy": {"trusted_proxies": ["127.0.0.1"]}}


def remote_headers(ip: str = "198.51.100.4") -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def handshake(
    ws: ClientConnection, device: Device, auth: dict[str, str], role: str = "user"
) -> dict[str, Any]:
    challenge = json.loads(ws.recv(timeout=5))
    ws.send(json.dumps(device.connect_frame(challenge["nonce"], auth, role)))
    reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
    if reply.get("type") == "hello":
        device.token = reply["deviceToken"]
    return reply


def request_pairing(
    server: EdgeServer, device: Device, role: str = "user", ip: str = "198.51.100.4"
) -> str:
    with connect(server.ws_url, additional_headers=remote_headers(ip)) as ws:
        reply = handshake(ws, device, {"token": GATEWAY_TOKEN}, role)
    assert reply["code"] == "PAIRING_REQUIRED"
    return str(reply["requestId"])


def wait_closed(ws: ClientConnection, seconds: float) -> tuple[int, str]:
    deadline = time.monotonic() + seconds
    with pytest.raises(ConnectionClosed) as info:
        while True:  # events may arrive first; a TimeoutError means the deadline was missed
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def test_two_gateways_share_the_store_cli_approves_and_revokes(
    edge_server_factory: Callable[..., EdgeServer], tmp_path: Path
) -> None:
    shared = tmp_path / "shared-data"
    first = edge_server_factory(PROXIED, name="a", data_dir=shared)
    second = edge_server_factory(PROXIED, name="b", data_dir=shared)
    device = Device("laptop")
    request_id = request_pairing(first, device)
    approved = first.cli("devices", "approve", request_id)
    assert "approved 'laptop'" in approved.stdout
    with connect(first.ws_url, additional_headers=remote_headers()) as a:
        hello = handshake(a, device, {"token": GATEWAY_TOKEN})
        assert hello["type"] == "hello"
        with connect(second.ws_url, additional_headers=remote_headers()) as b:
            assert handshake(b, device, {"deviceToken": hello["deviceToken"]})["type"] == "hello"
            second.cli("devices", "revoke", device.id[:12])
            assert wait_closed(a, 2.0) == (1008, "device revoked")
            assert wait_closed(b, 2.0) == (1008, "device revoked")


def test_two_uvicorn_workers_close_revoked_sockets(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(PROXIED, workers=2)
    device = Device("phone")
    server.cli("devices", "approve", request_pairing(server, device))
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(6):  # fresh connections spread over both workers
            ws = stack.enter_context(connect(server.ws_url, additional_headers=remote_headers()))
            auth = {"deviceToken": device.token} if device.token else {"token": GATEWAY_TOKEN}
            assert handshake(ws, device, auth)["type"] == "hello"
            sockets.append(ws)
        assert len(list((server.data_dir / "run").iterdir())) == 2
        server.cli("devices", "revoke", device.id)
        for ws in sockets:
            assert wait_closed(ws, 2.0) == (1008, "device revoked")


def test_approval_acknowledged_by_the_api_survives_kill_9(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(PROXIED)
    devices = [Device(f"device {i}") for i in range(5)]
    acknowledged = []
    for device in devices:
        request_id = request_pairing(server, device)
        response = httpx.post(
            f"{server.url}/api/requests/{request_id}/approve", json={"role": "user"}
        )
        assert response.status_code == 200, response.text
        acknowledged.append(device.id)
    server.stop(signal.SIGKILL)
    server.start()
    listing = json.loads(server.cli("devices", "list", "--json").stdout)
    assert {d["id"] for d in listing["devices"]} >= set(acknowledged)
    with connect(server.ws_url, additional_headers=remote_headers()) as ws:
        assert handshake(ws, devices[-1], {"token": GATEWAY_TOKEN})["type"] == "hello"


def test_cli_approval_survives_kill_9_during_traffic(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(PROXIED)
    device = Device("kiosk")
    request_id = request_pairing(server, device)
    with httpx.Client() as client:
        for _ in range(20):
            client.get(f"{server.url}/api/whoami")
        server.cli("devices", "approve", request_id)
        server.stop(signal.SIGKILL)
    server.start()
    with connect(server.ws_url, additional_headers=remote_headers()) as ws:
        assert handshake(ws, device, {"token": GATEWAY_TOKEN})["type"] == "hello"


def approve_over_the_api(
    server: EdgeServer,
    requests: list[tuple[str, Device]],
    acked: list[str],
    kill_after: int | None = None,
    reached: threading.Event | None = None,
) -> None:
    """Approve each request in turn, noting the devices whose approval was acknowledged.

    With ``kill_after``, ``reached`` is set as soon as that many approvals are
    acknowledged, and the stream goes on: the kill that follows lands while
    approvals are still being sent, whatever the machine's speed.
    """
    with httpx.Client(timeout=5) as client:
        for request_id, device in requests:
            try:
                response = client.post(f"{server.url}/api/requests/{request_id}/approve", json={})
            except httpx.HTTPError:
                return  # killed: this one was never acknowledged
            if response.status_code == 200:
                acked.append(device.id)
                if reached is not None and len(acked) == kill_after:
                    reached.set()
    if reached is not None:
        reached.set()  # the stream ended first: the caller's assertion reports it


def approve_with_the_cli(
    server: EdgeServer, request_id: str, device: Device, acked: list[str]
) -> None:
    if server.cli("devices", "approve", request_id, check=False).returncode == 0:
        acked.append(device.id)


def test_approvals_acknowledged_by_api_and_cli_survive_kill_9_at_random_moments(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    """Kill -9 lands at a random moment of a stream of approvals, four times over.

    The API approves requests one after another while the CLI, writing the
    same SQLite file from its own process, approves another; whatever was
    acknowledged (a 200, or the CLI's exit 0) before the kill is paired after
    the restart, and the database passes SQLite's integrity check. The moment
    is chosen by what has happened, not by a clock: each round kills right
    after the k-th acknowledged API approval, k drawn at random, so the kill
    lands inside the stream on a fast machine and a slow one alike.
    """
    server = edge_server_factory(PROXIED)
    rng = random.Random(20261201)
    per_round = 24  # requests per round: one for the CLI, the rest for the API
    acknowledged: set[str] = set()
    for round_number in range(4):
        devices = [Device(f"round {round_number} device {n}") for n in range(per_round)]
        requests = [
            (request_pairing(server, device, ip=f"198.51.{round_number}.{n}"), device)
            for n, device in enumerate(devices)
        ]
        (cli_request, cli_device), api_requests = requests[0], requests[1:]
        # Leave at least five approvals unsent at the kill, so it interrupts the stream.
        kill_after = rng.randint(1, len(api_requests) - 5)
        reached = threading.Event()
        api_acked: list[str] = []
        cli_acked: list[str] = []
        workers = [
            threading.Thread(
                target=approve_over_the_api,
                args=(server, api_requests, api_acked, kill_after, reached),
            ),
            threading.Thread(
                target=approve_with_the_cli, args=(server, cli_request, cli_device, cli_acked)
            ),
        ]
        for worker in workers:
            worker.start()
        assert reached.wait(60), f"round {round_number}: approvals stalled at {len(api_acked)}"
        server.stop(signal.SIGKILL)
        for worker in workers:
            worker.join(60)
        # The kill landed inside the stream of API approvals, not before or after it.
        assert kill_after <= len(api_acked) < len(api_requests), (round_number, kill_after, api_acked)
        acknowledged.update(api_acked, cli_acked)
        server.start()
        listing = json.loads(server.cli("devices", "list", "--json").stdout)
        paired = {d["id"] for d in listing["devices"]}
        assert acknowledged <= paired, f"round {round_number}: lost {acknowledged - paired}"
    server.stop()
    with sqlite3.connect(server.data_dir / "edge.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_tokens_never_appear_in_logs(edge_server_factory: Callable[..., EdgeServer]) -> None:
    server = edge_server_factory(
        {**PROXIED, "logging": {"level": "debug", "format": "json", "access_log": True}}
    )
    device = Device("audited")
    server.cli("devices", "approve", request_pairing(server, device))
    with connect(server.ws_url, additional_headers=remote_headers()) as ws:
        hello = handshake(ws, device, {"token": GATEWAY_TOKEN})
    device_token = hello["deviceToken"]
    with httpx.Client() as client:
        for token in (device_token, "wrong-" + device_token[:10], GATEWAY_TOKEN):
            client.get(
                f"{server.url}/api/devices",
                headers={"authorization": f"Bearer {token}", **remote_headers()},
            )
        client.post(
            f"{server.url}/api/session",
            headers={"authorization": f"Bearer {device_token}", **remote_headers()},
        )
    server.stop()
    log = server.log()
    assert "GET /api/devices" in log  # the access log was really on
    for secret in (device_token, GATEWAY_TOKEN):
        assert secret not in log
        assert secret[:16] not in log
