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
from tests.integration.proxies import (
    HAProxy,
    client_from,
    header_values,
    pair_through,
    raw_request,
    start_haproxy,
    start_upstream_process,
    ws_from,
    ws_handshake,
)

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
    assert body["trustedPeer"] is True
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


# -- hostile input through the shipped haproxy.cfg (issue: forwarding that cannot be steered) --


@pytest.fixture
def hostile_stack(edge_server_factory: Callable[..., EdgeServer], tmp_path: Path) -> Iterator[tuple[EdgeServer, HAProxy, str]]:
    """Edge reading Forwarded and X-Real-IP before X-Forwarded-For, with an echo upstream."""
    upstream = start_upstream_process(tmp_path)
    edge = edge_server_factory(
        {
            "proxy": {"trusted_proxies": ["127.0.0.1"], "client_ip_headers": ["forwarded", "x-real-ip", "x-forwarded-for"]},
            "upstreams": [{"prefix": "/svc/", "share_control_origin": True, "url": f"http://127.0.0.1:{upstream.port}"}],
        }
    )
    haproxy = start_haproxy(tmp_path / "haproxy", edge.port)
    hello = pair_through(
        haproxy.ws_url, CLIENT, Device("haproxy tester"),
        lambda rid: edge.cli("devices", "approve", rid), ssl=haproxy.tls(),
    )
    yield edge, haproxy, str(hello["deviceToken"])
    haproxy.stop()
    upstream.stop()


def test_hostile_host_and_forwarding_headers_in_any_spelling_cannot_choose_the_client(
    hostile_stack: tuple[EdgeServer, HAProxy, str],
) -> None:
    edge, haproxy, token = hostile_stack
    forged: list[tuple[str, str]] = [
        ("Forwarded", "for=10.0.0.1"),
        ("X-Real-IP", "10.0.0.2"),
        ("X_Real_IP", "10.0.0.3"),
        ("x_forwarded_for", "10.0.0.4"),
        ("X-Forwarded-Port", "1"),
    ]
    reached = 0
    for host in ('a", for=198.51.100.1', "a;for=10.0.0.1", "a,for=127.0.0.1", "for=1.2.3.4", "=", f"127.0.0.1:{haproxy.https_port}"):
        status, body = raw_request(CLIENT, haproxy.https_port, "/api/whoami", [("Host", host), *forged], tls=haproxy.tls())
        if status == 400 and body is None:
            continue  # HAProxy itself refused this Host
        reached += 1
        assert status == 200, host
        assert body is not None
        assert body["client"]["ip"] == CLIENT, (host, body)
        assert body["local"] is False
        assert body["anomalies"] == [], (host, body)
    assert reached >= 1
    status, echo = raw_request(
        CLIENT, haproxy.https_port, "/svc/echo",
        [("Authorization", f"Bearer {token}"), ("Remote_User", "forged"), *forged], tls=haproxy.tls(),
    )
    assert status == 200
    assert echo is not None
    assert header_values(echo, "x-forwarded-for") == [CLIENT]
    values = [value for _, value in echo["headers"]]
    assert not [v for v in values if v.startswith("10.0.0.") or v == "forged"], echo["headers"]
    assert "ERROR" not in edge.log()


def test_dot_segments_through_haproxy_never_leave_the_upstream_prefix(
    hostile_stack: tuple[EdgeServer, HAProxy, str],
) -> None:
    _, haproxy, token = hostile_stack
    auth = [("Authorization", f"Bearer {token}")]
    for target in ("/svc/x/../../admin/", "/svc/%2e%2e/admin/", "/svc/..%2fadmin", "/svc/a%5cb"):
        status, body = raw_request(CLIENT, haproxy.https_port, target, auth, tls=haproxy.tls())
        assert status == 400, target
        assert body is not None and body["reason"] == "path_refused"
    status, echo = raw_request(CLIENT, haproxy.https_port, "/svc/a/../b", auth, tls=haproxy.tls())
    assert status == 200
    assert echo is not None and echo["raw_path"] == "/svc/b"


