"""Edge behind real Caddy, running the shipped ``deploy/caddy/Caddyfile`` (placeholders from the env).

Also checks the Docker deployment, which runs the same Caddyfile: docker
cannot run here, so its compose file and Edge configuration are validated.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.exceptions import ConnectionClosed

from edge.config import load_settings
from tests.conftest import GATEWAY_TOKEN, Device
from tests.integration.conftest import EdgeServer, free_port
from tests.integration.proxies import (
    DEPLOY,
    REPO,
    Caddy,
    Process,
    caddy_env,
    client_from,
    header_values,
    pair_through,
    raw_request,
    start_caddy,
    start_upstream_process,
    ws_from,
    ws_handshake,
)

pytestmark = pytest.mark.integration
needs_caddy = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed (scripts/install-test-deps)")

CLIENT = "127.0.0.2"
OTHER_CLIENT = "127.0.0.3"


@dataclass
class Stack:
    edge: EdgeServer
    caddy: Caddy
    upstream: Process

    def http(self, address: str = CLIENT) -> Any:
        return client_from(address, base_url=self.caddy.url)

    def ws(self, path: str = "/ws", address: str = CLIENT, **kwargs: Any) -> Any:
        return ws_from(address, f"ws://127.0.0.1:{self.caddy.port}{path}", **kwargs)

    def pair(self, device: Device) -> str:
        hello = pair_through(
            self.caddy.ws_url, CLIENT, device, lambda rid: self.edge.cli("devices", "approve", rid)
        )
        return str(hello["deviceToken"])


@pytest.fixture
def stack_factory(edge_server_factory: Callable[..., EdgeServer], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    started: list[Any] = []

    def factory(proxy: dict[str, Any] | None = None) -> Stack:
        upstream = start_upstream_process(tmp_path)
        started.append(upstream)
        edge = edge_server_factory(
            {
                "proxy": proxy if proxy is not None else {"trusted_proxies": ["127.0.0.1"]},
                "upstreams": [{"prefix": "/svc/", "share_control_origin": True, "url": f"http://127.0.0.1:{upstream.port}", "websocket": True}],
            }
        )
        caddy = start_caddy(tmp_path / f"caddy-{len(started)}", edge.port, upstream.port)
        started.append(caddy)
        return Stack(edge, caddy, upstream)

    yield factory
    for server in reversed(started):
        server.stop()


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory()


@needs_caddy
def test_client_behind_caddy_is_resolved_to_its_own_loopback_address(stack: Stack) -> None:
    for address in (CLIENT, OTHER_CLIENT):
        with stack.http(address) as client:
            body = client.get("/api/whoami", headers={"X-Forwarded-For": "203.0.113.1"}).json()
        assert body["client"]["ip"] == address  # the forged entry was replaced by Caddy
        assert body["trustedPeer"] is True
        assert body["local"] is False
        assert body["anomalies"] == []


@needs_caddy
def test_forwarded_and_real_ip_headers_from_the_client_never_reach_edge(
    stack_factory: Callable[..., Stack],
) -> None:
    # Even an Edge that reads Forwarded first only sees what Caddy itself wrote.
    stack = stack_factory({"trusted_proxies": ["127.0.0.1"], "client_ip_headers": ["forwarded", "x-real-ip", "x-forwarded-for"]})
    with stack.http() as client:
        body = client.get(
            "/api/whoami", headers={"Forwarded": "for=203.0.113.3", "X-Real-IP": "203.0.113.4"}
        ).json()
    assert body["client"]["ip"] == CLIENT
    assert body["headerUsed"] == "x-forwarded-for"


@needs_caddy
def test_empty_trusted_proxies_behind_caddy_fail_closed_and_say_so(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory({"trusted_proxies": []})
    with stack.http() as client:
        body = client.get("/api/whoami").json()
        devices = client.get("/api/devices")
    assert body["client"]["ip"] == "127.0.0.1"
    assert body["local"] is False
    assert body["anomalies"] == ["untrusted_proxy_headers"]
    assert devices.status_code == 401
    assert "proxy.trusted_proxies" in stack.edge.log()
    doctor = stack.edge.cli("doctor", check=False)
    assert "caddy" in doctor.stdout
    assert "proxy.trusted_proxies is empty" in doctor.stdout


@needs_caddy
def test_pairing_over_the_websocket_through_caddy_end_to_end(stack: Stack) -> None:
    device = Device("phone behind caddy")
    with stack.ws() as ws:
        challenge = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {"token": "not-the-gateway-token-0000"})))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "unauthorized: gateway token mismatch")

    with stack.ws() as ws:
        error = ws_handshake(ws, device, {"token": GATEWAY_TOKEN})
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert error["code"] == "PAIRING_REQUIRED"
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "pairing required")
    stack.edge.cli("devices", "approve", error["requestId"])
    with stack.ws() as ws:
        hello = ws_handshake(ws, device, {"token": GATEWAY_TOKEN})
    assert hello["client"] == {"ip": CLIENT, "local": False}


@needs_caddy
def test_forward_auth_protects_an_app_that_caddy_proxies(stack: Stack) -> None:
    device = Device("caddy client")
    token = stack.pair(device)
    with stack.http() as client:
        api = client.get("/app/data", headers={"Accept": "application/json"})
        browser = client.get("/app/data", headers={"Accept": "text/html"})
        allowed = client.get(
            "/app/data",
            headers={
                "Authorization": f"Bearer {token}",
                "Remote-User": "admin",
                "X-Edge-Device-Id": "forged",
                "Remote-Email": "root@example.com",
                "Cookie": f"lang=en; edge_session={token}",
            },
        )
    assert api.status_code == 401
    assert api.json()["error"] == "pairing_required"
    assert browser.status_code == 302
    assert browser.headers["location"] == f"http://127.0.0.1:{stack.caddy.port}/"
    assert allowed.status_code == 200
    echo = allowed.json()
    assert header_values(echo, "remote-user") == [device.id]  # stable, not the name it chose
    assert header_values(echo, "remote-name") == ["caddy client"]
    assert header_values(echo, "x-edge-device-id") == [device.id]
    assert header_values(echo, "remote-email") == []
    assert header_values(echo, "x-forwarded-for") == [CLIENT]
    assert header_values(echo, "authorization") == []
    assert header_values(echo, "cookie") == ["lang=en"]


@needs_caddy
def test_forward_auth_ignores_forged_identity_without_credentials(stack: Stack) -> None:
    with stack.http() as client:
        response = client.get("/app/data", headers={"Remote-User": "local", "X-Edge-Auth": "local"})
    assert response.status_code == 401


@needs_caddy
def test_forward_auth_endpoints_are_not_public(stack: Stack) -> None:
    with stack.http() as client:
        assert client.get("/auth/caddy").status_code == 404


@needs_caddy
def test_edge_forwards_to_its_upstream_through_caddy_http_and_websocket(stack: Stack) -> None:
    device = Device("svc user")
    token = stack.pair(device)
    auth = {"Authorization": f"Bearer {token}"}
    with stack.http() as client:
        echo = client.get("/svc/echo", headers=auth).json()
    assert header_values(echo, "x-forwarded-for") == [CLIENT]
    assert header_values(echo, "remote-user") == [device.id]
    assert header_values(echo, "remote-name") == ["svc user"]
    with stack.ws("/svc/live", additional_headers=auth) as ws:
        ws.send(b"\x01\x02")
        assert ws.recv(timeout=5) == b"\x01\x02"
        ws.send("close:4010:done")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4010, "done")


# -- the Docker deployment (validated; docker itself cannot run here) -----------------------


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_file_puts_edge_behind_caddy_with_persistent_data() -> None:
    compose = _compose()
    edge, caddy = compose["services"]["edge"], compose["services"]["caddy"]
    assert (REPO / edge["build"]["context"].replace("../..", ".")).exists()
    assert (DEPLOY / "docker" / edge["build"]["context"] / edge["build"]["dockerfile"]).is_file()
    assert "edge-data:/var/lib/edge" in edge["volumes"]
    assert "ports" not in edge  # only Caddy is published
    assert set(compose["volumes"]) >= {"edge-data", "caddy-data"}
    caddyfile_mount = next(v for v in caddy["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro"))
    assert (DEPLOY / "docker" / caddyfile_mount.split(":")[0]).resolve() == DEPLOY / "caddy" / "Caddyfile"
    assert caddy["environment"]["EDGE_UPSTREAM"] == "edge:18789"


def test_edge_in_docker_trusts_exactly_the_caddy_container() -> None:
    compose = _compose()
    settings = load_settings(DEPLOY / "docker" / "edge.yaml")
    caddy_ip = compose["services"]["caddy"]["networks"]["edge-net"]["ipv4_address"]
    subnet = ipaddress.ip_network(compose["networks"]["edge-net"]["ipam"]["config"][0]["subnet"])
    assert settings.proxy.trusted_proxies == [caddy_ip]
    assert ipaddress.ip_address(caddy_ip) in subnet
    assert str(settings.data_dir) == "/var/lib/edge"
    assert settings.server.port == 18789


def test_dockerfile_runs_edge_as_an_unprivileged_user() -> None:
    lines = [line.strip() for line in (DEPLOY / "docker" / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users == ["edge"]
    for line in lines:
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"


@needs_caddy
def test_caddyfile_adapts_with_the_compose_environment(tmp_path: Path) -> None:
    environment = _compose()["services"]["caddy"]["environment"]
    env = caddy_env(tmp_path, free_port(), free_port(), 18789, 8080)
    env.update({k: str(v).replace("${EDGE_SITE:-edge.example.com}", "edge.example.com").replace(
        "${EDGE_APP_UPSTREAM:-app:8080}", "app:8080") for k, v in environment.items()})
    result = subprocess.run(
        ["caddy", "adapt", "--config", str(DEPLOY / "caddy" / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    dials = json.dumps(config)
    assert '"dial": "edge:18789"' in dials
    assert "edge.example.com" in dials


# -- hostile input through the shipped Caddyfile (issue: forwarding that cannot be steered) ---


@needs_caddy
def test_a_visitors_query_never_becomes_the_forward_auth_query(stack: Stack) -> None:
    token = stack.pair(Device("query tester"))
    auth = [("Authorization", f"Bearer {token}")]
    for query in ("role=bogus", "role=admin", "role=", "role=user&role=root", "%zz=%", "role=%00"):
        status, _ = raw_request(CLIENT, stack.caddy.port, f"/app/x?{query}", [("Accept", "application/json")])
        assert status == 401, query
        status, echo = raw_request(CLIENT, stack.caddy.port, f"/app/x?{query}", auth)
        assert status == 200, query  # a user device, whatever role the visitor names
        assert echo is not None
        assert echo["query"] == query.replace("%zz=%", "%zz=%")  # the app still gets its query
    assert "ERROR" not in stack.edge.log()


@needs_caddy
def test_identity_headers_in_any_spelling_never_reach_the_protected_app(stack: Stack) -> None:
    device = Device("spelling tester")
    token = stack.pair(device)
    forged = [
        ("Authorization", f"Bearer {token}"),
        ("Remote_User", "forged"),
        ("REMOTE_EMAIL", "forged"),
        ("Remote-Name", "forged"),
        ("X_Edge_Role", "forged"),
        ("X-Forwarded-User", "forged"),
        ("X_Forwarded_Email", "forged"),
        ("X-Auth-Request-Email", "forged"),
        ("X_Auth_Request_User", "forged"),
        ("X-Remote-User", "forged"),
        ("X-Webauth-User", "forged"),
        ("X-Forwarded-Prefix", "forged"),
        ("X_Real_IP", "forged"),
    ]
    for path in ("/app/report", "/svc/echo"):  # Caddy's forward_auth, and Edge's own forwarding
        status, echo = raw_request(CLIENT, stack.caddy.port, path, forged)
        assert status == 200, path
        assert echo is not None
        assert "forged" not in [value for _, value in echo["headers"]], (path, echo["headers"])
        assert header_values(echo, "remote-user") == [device.id]
        assert header_values(echo, "remote-name") == ["spelling tester"]


@needs_caddy
def test_the_session_cookie_never_reaches_the_protected_app_in_any_form(stack: Stack) -> None:
    token = stack.pair(Device("cookie tester"))
    cases = {
        f"theme=dark, edge_session={token}": [],
        f"__Host-edge_session={token}; lang=en": ["lang=en"],
        f"lang=en; edge_session={token}; edge_session={token}": ["lang=en"],  # every copy replaced
    }
    for cookie, kept in cases.items():
        status, echo = raw_request(CLIENT, stack.caddy.port, "/app/report", [("Cookie", cookie)])
        assert status == 200, cookie
        assert echo is not None
        assert header_values(echo, "cookie") == kept, cookie
        assert token not in json.dumps(echo)


@needs_caddy
def test_dot_segments_through_caddy_never_leave_the_upstream_prefix(stack: Stack) -> None:
    token = stack.pair(Device("path tester"))
    auth = [("Authorization", f"Bearer {token}")]
    for target in ("/svc/x/../../admin/", "/svc/%2e%2e/admin/", "/svc/..%2fadmin", "/svc/a%5cb"):
        status, echo = raw_request(CLIENT, stack.caddy.port, target, auth)
        assert status in (400, 404), target  # Edge refuses it, or Caddy cleaned it off the prefix
        if status == 404:
            assert echo is None or "raw_path" not in echo
