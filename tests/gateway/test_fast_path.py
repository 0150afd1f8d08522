"""A keep-alive connection's repeated request: resolved from its memo, judged through the caches.

Under ``edge serve`` every connection carries a ``Connection`` memo
(``edge.gateway.protocols``): a request that repeats the previous one's header
bytes reuses its resolution, and the credential is answered from the token
cache by the token as presented. These tests run the app behind the same memo
(one ``Connection`` for all requests, as on one keep-alive connection) and
check that nothing the caches hold outlives a revocation, a lockout or a reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge import create_app
from edge.config import load_settings
from edge.gateway.context import CONNECTION_KEY, PEER_OWNER_KEY, Connection
from edge.gateway.live import live_config
from edge.net import NOT_LOOKED_UP
from edge.pairing.service import PairingService
from tests.conftest import GATEWAY_TOKEN, REMOTE, Device, base_config, client_for
from tests.gateway.test_http import pair_remote

CLIENT_IP = "203.0.113.50"
FORWARDED = {"x-forwarded-for": CLIENT_IP}


class OneConnection:
    """The app as ``edge serve``'s protocol classes run it, all requests on one connection."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state
        self.connection = Connection(NOT_LOOKED_UP)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[PEER_OWNER_KEY] = self.connection.owner
            scope[CONNECTION_KEY] = self.connection
        await self.app(scope, receive, send)


def proxied_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return base_config(tmp_path, proxy={"trusted_proxies": [REMOTE[0]]}, **overrides)


@pytest.fixture
def edge(tmp_path: Path) -> OneConnection:
    return OneConnection(create_app(proxied_config(tmp_path)))


def bearer(token: str) -> dict[str, str]:
    return {**FORWARDED, "authorization": f"Bearer {token}"}


def test_a_repeated_request_reuses_the_connections_resolution(edge: OneConnection) -> None:
    with client_for(edge, REMOTE) as client:
        first = client.get("/api/whoami", headers=FORWARDED).json()
        remembered = edge.connection.last
        second = client.get("/api/whoami", headers=FORWARDED).json()
        assert edge.connection.last is remembered  # a memo hit leaves the entry alone
        other = client.get("/api/whoami", headers={"x-forwarded-for": "203.0.113.51"}).json()
    assert remembered is not None
    assert first == second
    assert first["client"]["ip"] == CLIENT_IP
    assert other["client"]["ip"] == "203.0.113.51"  # other header bytes: resolved anew
    assert edge.connection.last is not remembered


def test_a_reload_on_the_same_connection_resolves_again(tmp_path: Path) -> None:
    edge = OneConnection(create_app(proxied_config(tmp_path)))
    gateway = edge.state.gateway
    with client_for(edge, REMOTE) as client:
        assert client.get("/api/whoami", headers=FORWARDED).json()["client"]["ip"] == CLIENT_IP
        untrusting = load_settings(base_config(tmp_path, proxy={"trusted_proxies": []}))
        gateway.live.replace(live_config(untrusting))
        after = client.get("/api/whoami", headers=FORWARDED).json()
    assert after["client"]["ip"] == REMOTE[0]  # the proxy is no longer believed
    assert "untrusted_proxy_headers" in after["anomalies"]


def test_revocation_here_refuses_the_next_request_on_the_connection(
    edge: OneConnection, device: Device
) -> None:
    token = pair_remote(edge.app, device, "admin")
    with client_for(edge, REMOTE) as client:
        for _ in range(3):
            assert client.get("/api/devices", headers=bearer(token)).status_code == 200
        edge.state.gateway.service.revoke(device.id, actor="test")
        refused = client.get("/api/devices", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.json()["reason"] == "device_revoked"


def test_revocation_by_another_process_refuses_once_its_event_is_applied(
    edge: OneConnection, device: Device
) -> None:
    gateway = edge.state.gateway
    token = pair_remote(edge.app, device, "admin")
    other_process = PairingService(gateway.store, GATEWAY_TOKEN)
    with client_for(edge, REMOTE) as client:
        for _ in range(3):
            assert client.get("/api/devices", headers=bearer(token)).status_code == 200
        seq = gateway.store.latest_seq()
        other_process.revoke(device.id, actor="test")
        # What the event watcher does as soon as it reads the event.
        gateway.service.apply_events(gateway.store.events_after(seq, 100))
        refused = client.get("/api/devices", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.json()["reason"] == "device_revoked"


def test_a_lockout_takes_effect_on_the_next_request_on_the_connection(
    edge: OneConnection,
) -> None:
    limit = edge.state.gateway.service.policy.rate_limit.failures
    with client_for(edge, REMOTE) as client:
        reasons = [
            client.get("/api/devices", headers=bearer(f"guess-{n}")).json()["reason"]
            for n in range(limit)
        ]
        locked = client.get("/api/devices", headers=bearer("guess-again"))
    assert reasons == ["device_token_invalid"] * limit
    assert locked.status_code == 401
    assert locked.json()["reason"] == "rate_limited"


def test_a_lockout_by_another_process_applies_once_its_event_is_applied(
    edge: OneConnection,
) -> None:
    gateway = edge.state.gateway
    other_process = PairingService(gateway.store, GATEWAY_TOKEN)
    key = gateway.service.client_key(CLIENT_IP)
    with client_for(edge, REMOTE) as client:
        first = client.get("/api/devices", headers=bearer("guess-0")).json()["reason"]
        seq = gateway.store.latest_seq()
        while not other_process.record_failure(key):
            pass
        gateway.service.apply_events(gateway.store.events_after(seq, 100))
        locked = client.get("/api/devices", headers=bearer("guess-1"))
    assert first == "device_token_invalid"
    assert locked.status_code == 401
    assert locked.json()["reason"] == "rate_limited"
