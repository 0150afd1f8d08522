"""Forward-auth endpoints in process: nginx ``auth_request`` and Caddy ``forward_auth`` contracts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from edge import create_app
from edge.gateway.forward_auth import header_safe
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, base_config, client_for, open_ws

PROXY = ("127.0.0.1", 50000)  # the reverse proxy on the same host, as Edge sees it
CLIENT_IP = "198.51.100.23"
ENDPOINTS = ("/auth/nginx", "/auth/caddy")


def proxied(extra: dict[str, str] | None = None, **overrides: str) -> dict[str, str]:
    """The headers the shipped proxy configurations send with a sub-request."""
    headers = {
        "x-forwarded-for": CLIENT_IP,
        "x-forwarded-proto": "https",
        "x-forwarded-host": "edge.example.com",
        "x-original-uri": "/app/reports?id=3",
        "x-original-method": "GET",
        "x-forwarded-uri": "/app/reports?id=3",
        "x-forwarded-method": "GET",
    }
    headers.update(overrides)
    headers.update(extra or {})
    return headers


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return create_app(
        base_config(
            tmp_path,
            proxy={"trusted_proxies": ["127.0.0.1"]},
            auth={"token": GATEWAY_TOKEN, "rate_limit": {"failures": 3, "window": 60, "lockout": 300}},
        )
    )


def pair(app: Any, device: Device, role: str = "user") -> str:
    """The real flow: ask with the gateway token, approve in the service, collect the token."""
    with client_for(app, REMOTE) as client:
        with open_ws(client) as ws:
            reply = device.handshake(ws, {"token": GATEWAY_TOKEN}, role=role)
        assert reply["code"] == "PAIRING_REQUIRED"
        app.state.gateway.service.approve(reply["requestId"], actor="test")
        with open_ws(client) as ws:
            hello = device.handshake(ws, {"token": GATEWAY_TOKEN}, role=role)
    assert hello["type"] == "hello"
    return str(hello["deviceToken"])


def via_proxy(app: Any) -> TestClient:
    return TestClient(app, client=PROXY, base_url="http://127.0.0.1:18789")


def sample(app: Any, name: str, **labels: str) -> float:
    value = app.state.gateway.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


def test_direct_loopback_client_is_allowed_as_local(app: Any) -> None:
    with client_for(app, LOOPBACK, base_url="http://localhost:18789") as client:
        response = client.get("/auth/nginx")
    assert response.status_code == 200
    assert response.headers["remote-user"] == "local"
    assert response.headers["x-edge-auth"] == "local"
    assert response.headers["x-edge-role"] == "admin"
    assert "x-edge-device-id" not in response.headers


@pytest.mark.parametrize("path", ENDPOINTS)
def test_paired_device_bearer_is_allowed_with_identity_headers(app: Any, path: str) -> None:
    device = Device("Alice's laptop")
    token = pair(app, device)
    with via_proxy(app) as client:
        response = client.get(path, headers=proxied({"authorization": f"Bearer {token}"}))
    assert response.status_code == 200
    assert response.headers["remote-user"] == device.id  # stable, not the name it chose
    assert response.headers["remote-name"] == "Alice's laptop"
    assert response.headers["remote-groups"] == "user"
    assert response.headers["x-edge-auth"] == "paired"
    assert response.headers["x-edge-device-id"] == device.id
    assert response.headers["x-edge-role"] == "user"


def test_session_cookie_is_accepted_like_the_bearer_token(app: Any) -> None:
    # Under https (the proxy says so) the session cookie is the __Host- one the gateway sets.
    token = pair(app, Device())
    with via_proxy(app) as client:
        response = client.get("/auth/caddy", headers=proxied({"cookie": f"theme=dark; __Host-edge_session={token}"}))
    assert response.status_code == 200
    assert response.headers["x-edge-auth"] == "paired"


def test_nginx_api_client_without_credentials_gets_401_and_no_location(app: Any) -> None:
    with via_proxy(app) as client:
        response = client.get("/auth/nginx", headers=proxied())
    assert response.status_code == 401
    assert response.json()["error"] == "pairing_required"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "location" not in response.headers


def test_nginx_browser_gets_401_never_a_redirect_with_location_of_the_dashboard(app: Any) -> None:
    with via_proxy(app) as client:
        response = client.get("/auth/nginx", headers=proxied({"accept": "text/html,*/*"}), follow_redirects=False)
    assert response.status_code == 401
    assert response.headers["location"] == "https://edge.example.com/"


def test_caddy_browser_is_redirected_to_the_dashboard(app: Any) -> None:
    with via_proxy(app) as client:
        response = client.get("/auth/caddy", headers=proxied({"accept": "text/html"}), follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "https://edge.example.com/"
    assert response.content == b""


def test_caddy_api_client_gets_401_json(app: Any) -> None:
    with via_proxy(app) as client:
        response = client.get("/auth/caddy", headers=proxied({"accept": "application/json"}))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["reason"] == "credentials_missing"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_client_supplied_identity_headers_grant_nothing(app: Any, path: str) -> None:
    forged = {"remote-user": "local", "x-edge-auth": "local", "x-edge-role": "admin"}
    with via_proxy(app) as client:
        response = client.get(path, headers=proxied(forged))
    assert response.status_code == 401
    assert "remote-user" not in response.headers


@pytest.mark.parametrize("path", ENDPOINTS)
def test_request_through_a_same_host_proxy_is_never_local(app: Any, path: str) -> None:
    # Even when the proxy says the client is loopback, a proxied request is not local.
    with via_proxy(app) as client:
        response = client.get(path, headers=proxied(**{"x-forwarded-for": "127.0.0.1"}))
    assert response.status_code == 401


def test_forwarding_headers_from_an_untrusted_peer_are_ignored(app: Any) -> None:
    with client_for(app, ("203.0.113.50", 40000)) as client:
        response = client.get("/auth/nginx", headers=proxied(**{"x-forwarded-for": "127.0.0.1"}))
        whoami = client.get("/api/whoami", headers={"x-forwarded-for": "127.0.0.1"}).json()
    assert response.status_code == 401
    assert whoami["client"]["ip"] == "203.0.113.50"
    assert whoami["anomalies"] == ["untrusted_proxy_headers"]


def test_role_admin_parameter_refuses_a_user_device_with_403(app: Any) -> None:
    user_token = pair(app, Device("user device"))
    admin_token = pair(app, Device("admin device"), role="admin")
    with via_proxy(app) as client:
        refused = client.get("/auth/nginx?role=admin", headers=proxied({"authorization": f"Bearer {user_token}"}))
        admitted = client.get("/auth/nginx?role=admin", headers=proxied({"authorization": f"Bearer {admin_token}"}))
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert admitted.status_code == 200
    assert admitted.headers["x-edge-role"] == "admin"


def test_unknown_role_parameter_is_the_clients_400_not_a_proxy_error(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Any visitor's query could reach the sub-request, so it may not raise an ERROR line.
    logger = logging.getLogger("edge")  # Edge's loggers do not propagate to the root
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO), via_proxy(app) as client:
            response = client.get("/auth/nginx?role=root", headers=proxied())
    finally:
        logger.removeHandler(caplog.handler)
    assert response.status_code == 400
    assert "role=admin" in response.json()["detail"]
    assert [r for r in caplog.records if "role='root'" in r.getMessage()]  # logged, as INFO
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_revoked_device_is_denied(app: Any) -> None:
    device = Device()
    token = pair(app, device)
    app.state.gateway.service.revoke(device.id, actor="test")
    with via_proxy(app) as client:
        response = client.get("/auth/caddy", headers=proxied({"authorization": f"Bearer {token}"}))
    assert response.status_code == 401
    assert response.json()["reason"] == "device_revoked"


def test_wrong_tokens_lock_the_client_out(app: Any) -> None:
    with via_proxy(app) as client:
        for _ in range(3):
            wrong = client.get("/auth/nginx", headers=proxied({"authorization": "Bearer not-a-device-token"}))
            assert wrong.json()["reason"] == "device_token_invalid"
        locked = client.get("/auth/nginx", headers=proxied({"authorization": "Bearer not-a-device-token"}))
    assert locked.status_code == 401
    assert locked.json()["reason"] == "rate_limited"
    assert int(locked.headers["retry-after"]) > 0


def test_decisions_are_counted_like_the_guard_counts_them(app: Any) -> None:
    token = pair(app, Device())
    before_denied = sample(app, "edge_requests_total", kind="http", decision="denied")
    before_paired = sample(app, "edge_requests_total", kind="http", decision="paired")
    before_missing = sample(app, "edge_auth_failures_total", reason="credentials_missing")
    with via_proxy(app) as client:
        client.get("/auth/nginx", headers=proxied())
        client.get("/auth/caddy", headers=proxied({"authorization": f"Bearer {token}"}))
    assert sample(app, "edge_requests_total", kind="http", decision="denied") == before_denied + 1
    assert sample(app, "edge_requests_total", kind="http", decision="paired") == before_paired + 1
    assert sample(app, "edge_auth_failures_total", reason="credentials_missing") == before_missing + 1


def test_head_and_post_sub_requests_are_judged_too(app: Any) -> None:
    with via_proxy(app) as client:
        assert client.head("/auth/nginx", headers=proxied()).status_code == 401
        assert client.post("/auth/nginx", headers=proxied()).status_code == 401


def test_device_names_become_ascii_header_values() -> None:
    assert header_safe("Zoë's laptop") == b"Zo%C3%AB's laptop"
    assert header_safe("tab\there\r\nX-Evil: 1") == b"tab%09here%0D%0AX-Evil: 1"
    assert header_safe("100% done") == b"100%25 done"
