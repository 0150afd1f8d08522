"""HTTP side of the contract: whoami, 401/403 answers, bearer tokens, the session cookie."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.conftest import LOOPBACK, REMOTE, Device, client_for, open_ws


def pair_remote(app: Any, device: Device, role: str = "user") -> str:
    """Run the real flow: ask with the gateway token, approve in the service, get a token."""
    from tests.conftest import GATEWAY_TOKEN

    gateway = app.state.gateway
    with client_for(app, REMOTE) as client:
        with open_ws(client) as ws:
            reply = device.handshake(ws, {"token": GATEWAY_TOKEN}, role=role)
        assert reply["code"] == "PAIRING_REQUIRED"
        gateway.service.approve(reply["requestId"], actor="test")
        with open_ws(client) as ws:
            hello = device.handshake(ws, {"token": GATEWAY_TOKEN}, role=role)
    assert hello["type"] == "hello"
    return str(hello["deviceToken"])


def test_whoami_is_public_and_describes_the_caller(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        body = client.get("/api/whoami").json()
    assert body["client"] == {"ip": "203.0.113.7", "port": 40000}
    assert body["peer"] == {
        "ip": "203.0.113.7",
        "port": 40000,
        "uid": None,
        "user": None,
        "owner": "unknown",
        "foundBy": "not looked up: the connection did not come through `edge serve`",
    }
    assert body["trustedPeer"] is False
    assert body["local"] is False
    assert body["auth"] == {"state": "anonymous", "device": None}
    assert body["anomalies"] == []


def test_whoami_reports_spoofed_headers_from_an_untrusted_peer(app: Any) -> None:
    with client_for(app, LOOPBACK, base_url="http://localhost:18789") as client:
        body = client.get("/api/whoami", headers={"x-forwarded-for": "127.0.0.1"}).json()
    assert body["local"] is False
    assert body["anomalies"] == ["untrusted_proxy_headers"]
    assert body["auth"]["state"] == "anonymous"


def test_direct_loopback_client_is_local(app: Any) -> None:
    with client_for(app, LOOPBACK, base_url="http://localhost:18789") as client:
        body = client.get("/api/whoami").json()
        devices = client.get("/api/devices")
    assert body["local"] is True
    assert body["auth"]["state"] == "local"
    assert devices.status_code == 200


def test_protected_route_without_credentials_is_401_pairing_required(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        response = client.get("/api/devices")
    assert response.status_code == 401
    assert response.json()["error"] == "pairing_required"
    assert response.headers["www-authenticate"] == 'Bearer realm="edge"'
    assert (
        "edge devices approve" in response.json()["detail"] or "pair" in response.json()["detail"]
    )


def test_invalid_bearer_is_401_unauthorized_with_invalid_token(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        response = client.get("/api/devices", headers={"authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.json()["reason"] == "device_token_invalid"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_user_device_is_403_on_admin_routes_and_admin_is_200(app: Any) -> None:
    user, admin = Device("user"), Device("admin")
    user_token = pair_remote(app, user, "user")
    admin_token = pair_remote(app, admin, "admin")
    with client_for(app, REMOTE) as client:
        denied = client.get("/api/devices", headers={"authorization": f"Bearer {user_token}"})
        allowed = client.get("/api/devices", headers={"authorization": f"Bearer {admin_token}"})
        me = client.get("/api/whoami", headers={"authorization": f"Bearer {user_token}"}).json()
    assert denied.status_code == 403
    assert denied.json()["error"] == "forbidden"
    assert allowed.status_code == 200
    assert {d["name"] for d in allowed.json()["devices"]} == {"user", "admin"}
    assert me["auth"]["state"] == "paired"
    assert me["auth"]["device"]["id"] == user.id


def test_session_cookie_is_httponly_samesite_strict_and_authenticates(
    app: Any, device: Device
) -> None:
    token = pair_remote(app, device, "admin")
    with client_for(app, REMOTE) as client:
        response = client.post("/api/session", headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 200
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # plain http here
        assert client.get("/api/devices").status_code == 200
        client.delete("/api/session")
        client.cookies.clear()
        assert client.get("/api/devices").status_code == 401


def test_session_cookie_is_secure_under_https(app: Any, device: Device) -> None:
    token = pair_remote(app, device, "user")
    with TestClient(app, client=REMOTE, base_url="https://edge.example.com") as client:
        response = client.post("/api/session", headers={"authorization": f"Bearer {token}"})
    assert "Secure" in response.headers["set-cookie"]


def test_session_cookie_is_host_prefixed_under_https_and_authenticates(
    app: Any, device: Device
) -> None:
    """``__Host-``: no sibling host and no plain-http page of the site can set or shadow it."""
    token = pair_remote(app, device, "admin")
    with TestClient(app, client=REMOTE, base_url="https://edge.example.com") as client:
        response = client.post("/api/session", headers={"authorization": f"Bearer {token}"})
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-edge_session=")
        assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie
        assert client.get("/api/devices").status_code == 200  # the prefixed name authenticates
        deleted = client.request(
            "DELETE", "/api/session", json={}, headers={"origin": "https://edge.example.com"}
        )
        assert deleted.status_code == 204
        cleared = [v for k, v in client.cookies.items() if "edge_session" in k]
        assert cleared == []
        assert client.get("/api/devices").status_code == 401


def test_revoked_device_token_is_401_device_revoked(app: Any, device: Device) -> None:
    token = pair_remote(app, device, "admin")
    app.state.gateway.service.revoke(device.id, actor="test")
    with client_for(app, REMOTE) as client:
        response = client.get("/api/devices", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["reason"] == "device_revoked"


def test_brute_force_on_bearer_tokens_locks_the_address_out(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        for _ in range(10):
            client.get("/api/devices", headers={"authorization": "Bearer guess"})
        locked = client.get("/api/devices", headers={"authorization": "Bearer guess"})
    assert locked.status_code == 401
    assert locked.json()["reason"] == "rate_limited"
    assert int(locked.headers["retry-after"]) > 0
    with client_for(app, ("198.51.100.9", 1)) as other:
        assert (
            other.get("/api/devices", headers={"authorization": "Bearer x"}).json()["reason"]
            == "device_token_invalid"
        )


def test_health_endpoints_are_public(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_metrics_are_refused_to_remote_clients_and_served_locally(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        assert client.get("/metrics").status_code == 401
    with client_for(app, LOOPBACK, base_url="http://127.0.0.1:18789") as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert "edge_requests_total" in response.text


def test_index_page_is_public_with_a_strict_csp(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert "connect-src 'self'" in response.headers["content-security-policy"]


def test_metrics_401_says_what_opens_the_endpoint(app: Any, device: Device) -> None:
    token = pair_remote(app, device, "admin")
    with client_for(app, REMOTE) as client:
        response = client.get("/metrics", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["reason"] == "metrics_forbidden"
    assert "metrics.bearer_token" in response.json()["detail"]
