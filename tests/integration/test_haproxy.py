"""Edge behind real HAProxy, running the shipped ``deploy/haproxy/haproxy.cfg`` (ports and paths templated)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import GATEWAY_TOKEN, Device
from tests.integration.conftest import EdgeServer
from tests.integration.proxies import HAProxy, client_from, start_haproxy, ws_from, ws_handshake

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (scripts/install-test-deps)"),
]

CLIENT = "127.0.0.2"


@pytest.fixture
def stack(edge_server_factory: Callable[..., EdgeServer], tmp_path: Path) -> Iterator[tuple[EdgeServer, HAProxy]]:
    edge = edge_server_factory({"proxy": {"trusted_proxies": ["127.0.0.1"]}})
    haproxy = start_haproxy(tmp_path / "haproxy", edge.port)
    yield edge, haproxy
    haproxy.stop()


def test_client_behind_haproxy_is_resolved_and_forged_headers_are_ignored(stack: tuple[EdgeServer, HAProxy]) -> None:
    _, haproxy = stack
    forged = {"X-Forwarded-For": "203.0.113.1", "Forwarded": "for=203.0.113.2", "X-Real-IP": "203.0.113.3"}
    with client_from(CLIENT, verify=haproxy.tls(), base_url=haproxy.url) as client:
        body = client.get("/api/whoami", headers=forged).json()
        hidden = client.get("/auth/nginx")
    assert body["client"]["ip"] == CLIENT
    assert body["trusted_peer"] is True
    assert body["local"] is False
    assert body["scheme"] == "https"
    assert body["host"] == f"127.0.0.1:{haproxy.https_port}"
    assert body["anomalies"] == []
    assert hidden.status_code == 404


def test_plain_http_is_redirected_to_https(stack: tuple[EdgeServer, HAProxy]) -> None:
    _, haproxy = stack
    with client_from(CLIENT) as client:
        response = client.get(f"http://127.0.0.1:{haproxy.http_port}/")
    assert response.status_code == 308
    assert response.headers["location"].startswith("https://")


def test_pairing_close_reasons_and_hello_pass_through_haproxy(stack: tuple[EdgeServer, HAProxy]) -> None:
    edge, haproxy = stack
    device = Device("haproxy client")
    with ws_from(CLIENT, haproxy.ws_url, ssl=haproxy.tls()) as ws:
        error = ws_handshake(ws, device, {"token": GATEWAY_TOKEN})
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert error["code"] == "PAIRING_REQUIRED"
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "pairing required")
    listing = json.loads(edge.cli("devices", "list", "--json").stdout)
    assert [r["clientIp"] for r in listing["requests"]] == [CLIENT]
    edge.cli("devices", "approve", error["requestId"])
    with ws_from(CLIENT, haproxy.ws_url, ssl=haproxy.tls()) as ws:
        hello = ws_handshake(ws, device, {"token": GATEWAY_TOKEN})
    assert hello["client"] == {"ip": CLIENT, "local": False}
