"""Edge behind real nginx, running the shipped ``deploy/nginx`` files (ports and paths templated).

Clients connect from 127.0.0.2 / 127.0.0.3 so the address nginx sees differs
from the address nginx itself connects to Edge from (127.0.0.1).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import GATEWAY_TOKEN, Device
from tests.integration.conftest import EdgeServer
from tests.integration.proxies import (
    Nginx,
    Process,
    client_from,
    header_values,
    pair_through,
    raw_request,
    start_nginx,
    start_upstream_process,
    ws_from,
    ws_handshake,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (scripts/install-test-deps)"),
]

CLIENT = "127.0.0.2"
OTHER_CLIENT = "127.0.0.3"


@dataclass
class Stack:
    edge: EdgeServer
    nginx: Nginx
    upstream: Process

    def http(self, address: str = CLIENT, **kwargs: Any) -> Any:
        return client_from(address, verify=self.nginx.tls(), base_url=self.nginx.url, **kwargs)

    def ws(self, path: str = "/ws", address: str = CLIENT, **kwargs: Any) -> Any:
        url = f"wss://127.0.0.1:{self.nginx.https_port}{path}"
        return ws_from(address, url, ssl=self.nginx.tls(), **kwargs)

    def pair(self, device: Device, address: str = CLIENT) -> str:
        hello = pair_through(
            f"wss://127.0.0.1:{self.nginx.https_port}/ws",
            address,
            device,
            lambda request_id: self.edge.cli("devices", "approve", request_id),
            ssl=self.nginx.tls(),
        )
        return str(hello["deviceToken"])


@pytest.fixture
def stack_factory(edge_server_factory: Callable[..., EdgeServer], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    started: list[Any] = []

    def factory(trusted: list[str] | None = None, client_ip_headers: list[str] | None = None) -> Stack:
        upstream = start_upstream_process(tmp_path)
        started.append(upstream)
        proxy: dict[str, Any] = {"trusted_proxies": ["127.0.0.1"] if trusted is None else trusted}
        if client_ip_headers is not None:
            proxy["client_ip_headers"] = client_ip_headers
        edge = edge_server_factory(
            {
                "proxy": proxy,
                "upstreams": [{"prefix": "/svc/", "share_control_origin": True, "url": f"http://127.0.0.1:{upstream.port}", "websocket": True}],
            }
        )
        nginx = start_nginx(tmp_path / f"nginx-{len(started)}", edge.port, upstream.port)
        started.append(nginx)
        return Stack(edge, nginx, upstream)

    yield factory
    for server in reversed(started):
        server.stop()


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory()


def test_client_behind_nginx_is_resolved_to_its_own_loopback_address(stack: Stack) -> None:
    for address in (CLIENT, OTHER_CLIENT):
        with stack.http(address) as client:
            body = client.get("/api/whoami").json()
        assert body["client"]["ip"] == address
        assert body["peer"]["ip"] == "127.0.0.1"
        assert body["trustedPeer"] is True
        assert body["local"] is False
        assert body["scheme"] == "https"
        assert body["anomalies"] == []


def test_spoofed_forwarding_headers_from_the_client_are_ignored(stack: Stack) -> None:
    forged = {
        "X-Forwarded-For": "203.0.113.1",
        "X-Real-IP": "203.0.113.2",
        "Forwarded": "for=203.0.113.3;proto=https",
        "X-Forwarded-Host": "evil.example.net",
    }
    with stack.http() as client:
        body = client.get("/api/whoami", headers=forged).json()
    assert body["client"]["ip"] == CLIENT
    assert body["host"] == f"127.0.0.1:{stack.nginx.https_port}"
    assert body["local"] is False
    assert body["anomalies"] == []


def test_even_a_loopback_client_through_nginx_is_not_local(stack: Stack) -> None:
    with stack.http("127.0.0.1") as client:
        body = client.get("/api/whoami").json()
        devices = client.get("/api/devices")
    assert body["client"]["ip"] == "127.0.0.1"
    assert body["local"] is False
    assert devices.status_code == 401


def test_plain_http_is_redirected_to_https(stack: Stack) -> None:
    with client_from(CLIENT) as client:
        response = client.get(f"http://127.0.0.1:{stack.nginx.http_port}/api/whoami")
    assert response.status_code == 308
    assert response.headers["location"].startswith("https://127.0.0.1")


def test_forward_auth_endpoints_are_not_public(stack: Stack) -> None:
    with stack.http() as client:
        assert client.get("/auth/nginx").status_code == 404


def test_pairing_over_the_websocket_through_nginx_end_to_end(stack: Stack) -> None:
    device = Device("remote laptop")
    with stack.ws() as ws:
        challenge = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {})))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "unauthorized: gateway token missing")

    with stack.ws() as ws:
        error = ws_handshake(ws, device, {"token": GATEWAY_TOKEN})
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert error["code"] == "PAIRING_REQUIRED"
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "pairing required")
    listing = json.loads(stack.edge.cli("devices", "list", "--json").stdout)
    assert [r["clientIp"] for r in listing["requests"]] == [CLIENT]
    stack.edge.cli("devices", "approve", error["requestId"])

    with stack.ws() as ws:
        hello = ws_handshake(ws, device, {"token": GATEWAY_TOKEN})
    assert hello["type"] == "hello"
    assert hello["client"] == {"ip": CLIENT, "local": False}
    with stack.http() as client:
        body = client.get("/api/whoami", headers={"Authorization": f"Bearer {hello['deviceToken']}"}).json()
    assert body["auth"]["state"] == "paired"
    assert body["auth"]["device"]["name"] == "remote laptop"


def test_auth_request_protects_an_app_that_nginx_proxies(stack: Stack) -> None:
    device = Device("ops tablet")
    token = stack.pair(device)
    with stack.http() as client:
        anonymous = client.get("/app/report")
        browser = client.get("/app/report", headers={"Accept": "text/html"})
        allowed = client.get(
            "/app/report",
            headers={
                "Authorization": f"Bearer {token}",
                "Remote-User": "admin",
                "X-Edge-Role": "admin",
                "Cookie": f"edge_session={token}; theme=dark",
            },
        )
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert browser.status_code == 302
    assert browser.headers["location"] == f"https://127.0.0.1:{stack.nginx.https_port}/"
    assert allowed.status_code == 200
    echo = allowed.json()
    assert echo["path"] == "/app/report"
    assert header_values(echo, "remote-user") == [device.id]  # stable, not the name it chose
    assert header_values(echo, "remote-name") == ["ops tablet"]
    assert header_values(echo, "x-edge-role") == ["user"]
    assert header_values(echo, "x-edge-device-id") == [device.id]
    assert header_values(echo, "x-forwarded-for") == [CLIENT]
    assert header_values(echo, "authorization") == []
    assert header_values(echo, "cookie") == ["theme=dark"]


def test_auth_request_refuses_a_client_that_forges_identity_headers(stack: Stack) -> None:
    with stack.http() as client:
        response = client.get("/app/report", headers={"Remote-User": "local", "X-Edge-Auth": "local"})
    assert response.status_code == 401


def test_edge_forwards_to_its_upstream_through_nginx_http_and_websocket(stack: Stack) -> None:
    device = Device("dashboard")
    token = stack.pair(device)
    auth = {"Authorization": f"Bearer {token}"}
    with stack.http() as client:
        echo = client.get("/svc/echo", headers=auth).json()
        refused = client.get("/svc/echo")
    assert refused.status_code == 401
    assert header_values(echo, "x-forwarded-for") == [CLIENT]
    assert header_values(echo, "x-forwarded-proto") == ["https"]
    assert header_values(echo, "remote-user") == [device.id]
    assert header_values(echo, "remote-name") == ["dashboard"]

    with stack.ws("/svc/live", additional_headers=auth) as ws:
        ws.send("ping over two proxies")
        assert ws.recv(timeout=5) == "ping over two proxies"
        ws.send("close:4003:upstream says bye")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4003, "upstream says bye")


def test_empty_trusted_proxies_fail_closed_and_reload_fixes_it_without_dropping_sockets(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(trusted=[])
    with stack.http() as client:
        body = client.get("/api/whoami").json()
        devices = client.get("/api/devices")
    assert body["client"]["ip"] == "127.0.0.1"  # every client looks like nginx...
    assert body["local"] is False  # ...and none of them is local
    assert body["anomalies"] == ["untrusted_proxy_headers"]
    assert devices.status_code == 401
    assert "proxy.trusted_proxies" in stack.edge.log()
    doctor = stack.edge.cli("doctor", check=False)
    assert "proxy.trusted_proxies is empty" in doctor.stdout

    # A live control socket, straight to Edge on loopback (a local admin).
    with connect(stack.edge.ws_url, open_timeout=30, proxy=None) as live:
        hello = ws_handshake(live, Device("console"), {})
        assert hello["type"] == "hello"
        config = yaml.safe_load(stack.edge.config_path.read_text())
        config["proxy"]["trusted_proxies"] = ["127.0.0.1", "::1"]
        stack.edge.config_path.write_text(yaml.safe_dump(config))
        stack.edge.cli("gateway", "reload")
        with stack.http() as client:
            after: dict[str, Any] = {}
            for _ in range(50):  # the worker applies SIGHUP on its own loop, soon after
                after = client.get("/api/whoami").json()
                if after["client"]["ip"] == CLIENT:
                    break
                time.sleep(0.1)
        assert after["client"]["ip"] == CLIENT
        assert after["anomalies"] == []
        live.send(json.dumps({"type": "req", "id": 1, "method": "self.whoami", "params": {}}))
        answer = json.loads(live.recv(timeout=5))
        while answer.get("type") != "res":
            answer = json.loads(live.recv(timeout=5))
    assert answer["ok"] is True


# -- hostile input through the shipped site (issue: forwarding that cannot be steered) ------

HOSTILE_HOSTS = [
    'edge.example.com", for=198.51.100.1',
    "edge.example.com;for=10.0.0.1",
    "edge.example.com,for=127.0.0.1",
    'x"for=203.0.113.9',
    "for=1.2.3.4",
    "=",
    'h";proto=http;for="[::1]"',
]


@pytest.fixture
def forwarded_stack(stack_factory: Callable[..., Stack]) -> Stack:
    """Edge reading the Forwarded header first, which the shipped files and docs offer."""
    return stack_factory(client_ip_headers=["forwarded", "x-forwarded-for"])


def test_a_hostile_host_cannot_choose_the_client_address_through_forwarded(forwarded_stack: Stack) -> None:
    stack = forwarded_stack
    token = stack.pair(Device("host tester"))
    accepted = 0
    for host in HOSTILE_HOSTS:
        status, body = raw_request(CLIENT, stack.nginx.https_port, "/api/whoami", [("Host", host)], tls=stack.nginx.tls())
        if status == 400 and body is None:
            continue  # nginx itself refused this Host: it never reached Edge
        accepted += 1
        assert status == 200, host
        assert body is not None
        assert body["client"]["ip"] == CLIENT, (host, body)
        assert body["local"] is False
        assert body["anomalies"] == [], (host, body)
        status, echo = raw_request(
            CLIENT, stack.nginx.https_port, "/svc/echo",
            [("Host", host), ("Authorization", f"Bearer {token}")], tls=stack.nginx.tls(),
        )
        assert status == 200, host
        assert echo is not None
        assert header_values(echo, "x-forwarded-for") == [CLIENT]
        assert header_values(echo, "forwarded")[0].startswith(f"for={CLIENT};proto=https"), host
        assert "198.51.100.1" not in json.dumps(echo) and "10.0.0.1" not in json.dumps(echo)
    assert accepted >= 4  # nginx lets most of them through: the shipped file must not
    assert "ERROR" not in stack.edge.log()


def test_dot_segments_through_nginx_never_leave_the_upstream_prefix(stack: Stack) -> None:
    token = stack.pair(Device("path tester"))
    auth = [("Authorization", f"Bearer {token}")]
    tls = stack.nginx.tls()
    for target in ("/svc/x/../../admin/", "/svc/%2e%2e/admin/", "/svc/x/%2E%2e/%2e%2e/admin", "/svc/..%2fadmin", "/svc/a%5cb"):
        status, body = raw_request(CLIENT, stack.nginx.https_port, target, auth, tls=tls)
        assert status == 400, target
        if body is not None and "reason" in body:  # else nginx refused it first
            assert body["reason"] == "path_refused"
    status, echo = raw_request(CLIENT, stack.nginx.https_port, "/svc/a/../b/%2e/c", auth, tls=tls)
    assert status == 200
    assert echo is not None
    assert echo["raw_path"] == "/svc/b/c"


def test_identity_headers_in_any_spelling_never_reach_the_protected_app(stack: Stack) -> None:
    device = Device("spelling tester")
    token = stack.pair(device)
    forged = [
        ("Authorization", f"Bearer {token}"),
        ("Remote_User", "forged"),
        ("REMOTE_EMAIL", "forged"),
        ("X_Edge_Role", "forged"),
        ("X-Forwarded-User", "forged"),
        ("X-Forwarded-Email", "forged"),
        ("X-Auth-Request-Email", "forged"),
        ("X-Remote-User", "forged"),
        ("X-WEBAUTH-USER", "forged"),
        ("Remote-Name", "forged"),
    ]
    for path in ("/app/report", "/svc/echo"):  # nginx's auth_request, and Edge's own forwarding
        status, echo = raw_request(CLIENT, stack.nginx.https_port, path, forged, tls=stack.nginx.tls())
        assert status == 200, path
        assert echo is not None
        assert "forged" not in [value for _, value in echo["headers"]], (path, echo["headers"])
        assert header_values(echo, "remote-user") == [device.id]
        assert header_values(echo, "remote-name") == ["spelling tester"]


def test_the_session_cookie_never_reaches_the_protected_app_in_any_form(stack: Stack) -> None:
    token = stack.pair(Device("cookie tester"))
    # Over https the gateway's cookie is __Host-edge_session: the one name that authenticates.
    cases = {
        f"theme=dark, __Host-edge_session={token}": [],
        f"__Host-edge_session={token}; lang=en": ["lang=en"],
        f"lang=en; __Host-edge_session={token}; __Host-edge_session={token}": [],
    }
    for cookie, kept in cases.items():
        status, echo = raw_request(
            CLIENT, stack.nginx.https_port, "/app/report", [("Cookie", cookie)], tls=stack.nginx.tls()
        )
        assert status == 200, cookie  # the cookie authenticates...
        assert echo is not None
        assert header_values(echo, "cookie") == kept, cookie  # ...and never reaches the app
        assert token not in json.dumps(echo)


def test_a_hostile_query_on_a_protected_app_is_never_a_500_or_an_error_line(stack: Stack) -> None:
    token = stack.pair(Device("query tester"))
    tls = stack.nginx.tls()
    for query in ("role=bogus", "role=admin", "role=", "role=user&role=root", "%zz=%", "role=%00"):
        status, _ = raw_request(CLIENT, stack.nginx.https_port, f"/app/x?{query}", tls=tls)
        assert status == 401, query
        status, _ = raw_request(
            CLIENT, stack.nginx.https_port, f"/app/x?{query}", [("Authorization", f"Bearer {token}")], tls=tls
        )
        assert status == 200, query  # the visitor's query is the app's, not the check's
    assert "ERROR" not in stack.edge.log()
