"""``edge serve`` for real: uvicorn on loopback, a real WebSocket client, the CLI beside it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import GATEWAY_TOKEN, Device
from tests.integration.conftest import EdgeServer, free_port, stop_process, wait_for_port

pytestmark = pytest.mark.integration


def ws_handshake(
    server: EdgeServer,
    device: Device,
    auth: dict[str, str],
    role: str = "user",
    headers: dict[str, str] | None = None,
) -> tuple[dict[str, Any] | None, Any]:
    """Returns (hello or error frame, close frame or None); the socket is closed after."""
    with connect(server.ws_url, additional_headers=headers or {}, open_timeout=30) as ws:
        challenge = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], auth, role)))
        try:
            first = json.loads(ws.recv(timeout=5))
            if first.get("type") == "error":
                ws.recv(timeout=5)
            return first, None
        except ConnectionClosed as exc:
            return None, exc.rcvd


def test_serve_on_example_config_answers_healthz(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory()
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert "Edge" in server.log()


def test_close_reason_reaches_a_real_websocket_client(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory({"proxy": {"trusted_proxies": ["127.0.0.1"]}})
    device = Device()
    # Through a "proxy" on loopback the client is remote: no token -> 1008 with the reason.
    with connect(server.ws_url, additional_headers={"X-Forwarded-For": "198.51.100.4"}) as ws:
        challenge = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {})))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1008
    assert info.value.rcvd.reason == "unauthorized: gateway token missing"


def test_pair_through_proxy_headers_approve_with_cli_then_revoke_closes_socket(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory({"proxy": {"trusted_proxies": ["127.0.0.1"]}})
    device = Device("remote laptop")
    remote = {"X-Forwarded-For": "198.51.100.4"}
    with connect(server.ws_url, additional_headers=remote) as ws:
        challenge = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {"token": GATEWAY_TOKEN})))
        error = json.loads(ws.recv(timeout=5))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert error["code"] == "PAIRING_REQUIRED"
    assert info.value.rcvd is not None and info.value.rcvd.reason == "pairing required"
    listing = json.loads(server.cli("devices", "list", "--json").stdout)
    assert [r["id"] for r in listing["requests"]] == [error["requestId"]]
    assert listing["requests"][0]["clientIp"] == "198.51.100.4"
    server.cli("devices", "approve", error["requestId"])

    with connect(server.ws_url, additional_headers=remote) as ws:
        challenge = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {"token": GATEWAY_TOKEN})))
        hello = json.loads(ws.recv(timeout=5))
        assert hello["type"] == "hello"
        assert hello["client"] == {"ip": "198.51.100.4", "local": False}
        server.cli("devices", "revoke", device.id)
        deadline = time.monotonic() + 2.0  # the contract: closed within 2 seconds
        with pytest.raises(ConnectionClosed) as info:
            while True:  # the device.revoked event may arrive first; a TimeoutError fails
                ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "device revoked")


def test_shutdown_closes_live_sockets_with_1012(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory()
    device = Device("local admin")
    with connect(server.ws_url) as ws:
        challenge = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {})))
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=10)
    assert info.value.rcvd is not None
    # uvicorn closes sockets itself (1012, no reason) before the lifespan shutdown runs
    assert info.value.rcvd.code == 1012


def test_serve_on_the_shipped_example_config_answers_healthz(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "edge.yaml"
    config = tmp_path / "edge.yaml"
    shutil.copy(example, config)  # data_dir is relative to the file: it lands in tmp_path
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "-c", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        text=True,
    )
    try:
        wait_for_port(port, proc=proc)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        token = tmp_path / "data" / "gateway_token"
        assert token.exists() and stat.S_IMODE(token.stat().st_mode) == 0o600
    finally:
        stop_process(proc)
    banner = proc.stdout.read() if proc.stdout else ""
    assert f"http://127.0.0.1:{port}/" in banner
    assert token.read_text().strip() not in banner
