"""Upstream forwarding and the gateway's lifecycle with real processes: shutdown, reload, systemd."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import Device
from tests.integration.conftest import EdgeServer, free_port
from tests.integration.proxies import (
    DEPLOY,
    Process,
    header_values,
    start_upstream_process,
    ws_handshake,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Process]:
    process = start_upstream_process(tmp_path)
    yield process
    process.stop()


@pytest.fixture
def edge(edge_server_factory: Callable[..., EdgeServer], upstream: Process) -> EdgeServer:
    return edge_server_factory(
        {
            "upstreams": [
                {"prefix": "/svc/", "share_control_origin": True, "url": f"http://127.0.0.1:{upstream.port}", "websocket": True},
            ]
        }
    )


def wait_inflight(upstream: Process, count: int) -> None:
    """Until the upstream is busy with ``count`` requests (asked directly, not via Edge)."""
    for _ in range(200):
        if httpx.get(f"http://127.0.0.1:{upstream.port}/_inflight", timeout=2).json()["inflight"] == count:
            return
        time.sleep(0.025)
    raise AssertionError(f"the upstream never had {count} request(s) in flight")


def test_local_client_reaches_the_upstream_and_it_is_counted(edge: EdgeServer) -> None:
    echo = httpx.get(f"{edge.url}/svc/echo", timeout=5).json()
    assert header_values(echo, "remote-user") == ["local"]
    metrics = httpx.get(f"{edge.url}/metrics", timeout=5).text
    assert 'edge_upstream_requests_total{code_class="2xx",upstream="svc"} 1.0' in metrics


def test_sigterm_lets_an_in_flight_upstream_request_finish_and_closes_sockets_with_1012(
    edge: EdgeServer, upstream: Process
) -> None:
    results: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: results.append(httpx.get(f"{edge.url}/svc/slow?delay=1.5", timeout=20))
    )
    with (
        connect(edge.ws_url, open_timeout=30, proxy=None) as control,
        connect(f"ws://127.0.0.1:{edge.port}/svc/live", open_timeout=30, proxy=None) as relayed,
    ):
        assert ws_handshake(control, Device("console"), {})["type"] == "hello"
        relayed.send("before shutdown")
        assert relayed.recv(timeout=5) == "before shutdown"
        slow.start()
        wait_inflight(upstream, 1)
        assert edge.proc is not None
        os.killpg(edge.proc.pid, signal.SIGTERM)
        for ws in (control, relayed):
            with pytest.raises(ConnectionClosed) as info:
                while True:  # an event frame may come first; a TimeoutError fails the test
                    ws.recv(timeout=5)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1012
    slow.join(timeout=20)
    assert [r.status_code for r in results] == [200]
    assert results[0].json()["path"] == "/svc/slow"
    # uvicorn re-raises SIGTERM once it has shut down cleanly; never SIGKILL.
    assert edge.proc.wait(timeout=20) in (0, -signal.SIGTERM)


def test_reload_reads_trusted_proxies_again_without_dropping_relayed_sockets(edge: EdgeServer) -> None:
    forged = {"X-Forwarded-For": "198.51.100.9"}
    before = httpx.get(f"{edge.url}/api/whoami", headers=forged, timeout=5).json()
    assert before["anomalies"] == ["untrusted_proxy_headers"]
    with connect(f"ws://127.0.0.1:{edge.port}/svc/live", open_timeout=30, proxy=None) as relayed:
        config = yaml.safe_load(edge.config_path.read_text())
        config["proxy"] = {"trusted_proxies": ["127.0.0.1"]}
        edge.config_path.write_text(yaml.safe_dump(config))
        assert "sent SIGHUP to 1 worker" in edge.cli("gateway", "reload").stdout
        after: dict[str, Any] = {}
        for _ in range(50):
            after = httpx.get(f"{edge.url}/api/whoami", headers=forged, timeout=5).json()
            if after["client"]["ip"] == "198.51.100.9":
                break
            time.sleep(0.1)
        assert after["client"]["ip"] == "198.51.100.9"
        assert after["local"] is False
        relayed.send("still here")
        assert relayed.recv(timeout=5) == "still here"


def test_an_upstream_that_never_answers_gets_504_not_a_hang(edge_server_factory: Callable[..., EdgeServer]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts connections; nobody ever reads or answers
        port = silent.getsockname()[1]
        server = edge_server_factory(
            {"upstreams": [{"prefix": "/mute/", "share_control_origin": True, "url": f"http://127.0.0.1:{port}", "timeout": 1}]}
        )
        response = httpx.get(f"{server.url}/mute/x", timeout=20)
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"
    assert "upstreams[].timeout" in server.log()


def test_an_upstream_that_is_down_gets_502(edge_server_factory: Callable[..., EdgeServer]) -> None:
    server = edge_server_factory({"upstreams": [{"prefix": "/gone/", "share_control_origin": True, "url": f"http://127.0.0.1:{free_port()}"}]})
    response = httpx.get(f"{server.url}/gone/x", timeout=20)
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    launcher = tmp_path / "edge"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m edge.cli \"$@\"\n")
    launcher.chmod(0o755)
    unit = (DEPLOY / "systemd" / "edge.service").read_text()
    assert "ExecReload=/opt/edge/bin/edge gateway reload" in unit
    target = tmp_path / "edge.service"
    target.write_text(unit.replace("/opt/edge/bin/edge", str(launcher)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "edge.service" not in result.stderr, result.stderr
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["PrivateTmp"] == "yes"
    assert settings["StateDirectory"] == "edge"


def test_shipped_deploy_configs_name_the_trusted_proxies_edge_needs() -> None:
    for path in (
        DEPLOY / "nginx" / "conf.d" / "edge.conf",
        DEPLOY / "caddy" / "Caddyfile",
        DEPLOY / "haproxy" / "haproxy.cfg",
    ):
        text = path.read_text()
        assert "trusted_proxies: [127.0.0.1]" in text, path
        assert "client_ip_headers: [x-forwarded-for]" in text, path
