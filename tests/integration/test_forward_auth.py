"""Forward-auth with real proxies in front of one Edge: nginx ``auth_request`` and Caddy ``forward_auth``.

Both proxies run their shipped configurations side by side and protect the
same small app under ``/app/``; the tests drive the decisions that only show
with real processes: a CLI revocation, lockouts per real client, the browser
session cookie, and the metrics of the running server.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Device
from tests.integration.conftest import EdgeServer
from tests.integration.proxies import (
    Caddy,
    Nginx,
    client_from,
    header_values,
    pair_through,
    running,
    start_caddy,
    start_nginx,
    start_upstream_process,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("nginx") is None or shutil.which("caddy") is None,
        reason="nginx and caddy are needed (scripts/install-test-deps)",
    ),
]

CLIENT = "127.0.0.2"
NEIGHBOUR = "127.0.0.3"


@dataclass
class Proxies:
    edge: EdgeServer
    nginx: Nginx
    caddy: Caddy

    def clients(self, address: str = CLIENT) -> list[httpx.Client]:
        """One client per proxy, both leaving from ``address``."""
        return [
            client_from(address, verify=self.nginx.tls(), base_url=self.nginx.url),
            client_from(address, base_url=self.caddy.url),
        ]

    def pair(self, device: Device) -> str:
        hello = pair_through(
            self.caddy.ws_url, CLIENT, device, lambda rid: self.edge.cli("devices", "approve", rid)
        )
        return str(hello["deviceToken"])


@pytest.fixture
def proxies(edge_server_factory: Callable[..., EdgeServer], tmp_path: Path) -> Iterator[Proxies]:
    upstream = start_upstream_process(tmp_path)
    edge = edge_server_factory(
        {
            "proxy": {"trusted_proxies": ["127.0.0.1"]},
            "auth": {"rate_limit": {"failures": 3, "window": 60, "lockout": 300}},
        }
    )
    nginx = start_nginx(tmp_path / "nginx", edge.port, upstream.port)
    with running(upstream, nginx):
        caddy = start_caddy(tmp_path / "caddy", edge.port, upstream.port)
        with running(caddy):
            yield Proxies(edge, nginx, caddy)


def statuses(clients: list[httpx.Client], path: str, **kwargs: Any) -> list[int]:
    return [client.get(path, **kwargs).status_code for client in clients]


def test_cli_revocation_takes_effect_on_the_next_request_through_both_proxies(proxies: Proxies) -> None:
    device = Device("soon revoked")
    token = proxies.pair(device)
    auth = {"Authorization": f"Bearer {token}"}
    clients = proxies.clients()
    try:
        assert statuses(clients, "/app/data", headers=auth) == [200, 200]
        proxies.edge.cli("devices", "revoke", device.id)
        # Other processes learn of a CLI revocation through the event log: the
        # contract gives it 2 seconds, so poll until then rather than race it.
        deadline = time.monotonic() + 2.0
        while statuses(clients, "/app/data", headers=auth) != [401, 401]:
            assert time.monotonic() < deadline, "revocation not effective within 2 s"
            time.sleep(0.05)
    finally:
        for client in clients:
            client.close()


def test_wrong_tokens_lock_out_the_real_client_not_its_neighbours(proxies: Proxies) -> None:
    token = proxies.pair(Device("neighbour's device"))
    wrong = {"Authorization": "Bearer guessed-device-token-0000000000"}
    with client_from(CLIENT, base_url=proxies.caddy.url) as guesser:
        for _ in range(3):
            assert guesser.get("/app/data", headers=wrong).json()["reason"] == "device_token_invalid"
        locked = guesser.get("/app/data", headers=wrong)
    assert locked.status_code == 401
    assert locked.json()["reason"] == "rate_limited"
    # Same proxy, same peer address for Edge (127.0.0.1), another real client: unaffected.
    with client_from(NEIGHBOUR, base_url=proxies.caddy.url) as neighbour:
        assert neighbour.get("/app/data", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_browser_session_cookie_opens_the_protected_app_on_the_same_host(proxies: Proxies) -> None:
    token = proxies.pair(Device("browser"))
    with client_from(CLIENT, verify=proxies.nginx.tls(), base_url=proxies.nginx.url) as browser:
        session = browser.post("/api/session", headers={"Authorization": f"Bearer {token}"})
        assert session.status_code == 200
        cookie = session.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Secure" in cookie  # https, as nginx told Edge
        page = browser.get("/app/page", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.json()["path"] == "/app/page"


def test_forward_auth_decisions_are_in_the_running_servers_metrics(proxies: Proxies) -> None:
    token = proxies.pair(Device("metrics"))
    clients = proxies.clients()
    try:
        statuses(clients, "/app/x")
        statuses(clients, "/app/x", headers={"Authorization": f"Bearer {token}"})
    finally:
        for client in clients:
            client.close()
    metrics = httpx.get(f"{proxies.edge.url}/metrics", timeout=5).text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['edge_requests_total{decision="paired",kind="http"}'] >= 2
    assert samples['edge_auth_failures_total{reason="credentials_missing"}'] >= 2
    assert samples['edge_proxy_headers_total{outcome="trusted"}'] >= 4


def test_a_device_naming_itself_admin_reaches_the_app_as_its_assigned_user(
    proxies: Proxies,
) -> None:
    """The name a device chose is never its identity to the app behind either proxy."""
    impostor = Device("admin")
    hello = pair_through(
        proxies.caddy.ws_url,
        CLIENT,
        impostor,
        lambda rid: proxies.edge.cli("devices", "approve", rid, "--user", "alice"),
    )
    auth = {"Authorization": f"Bearer {hello['deviceToken']}", "Remote-User": "admin"}
    clients = proxies.clients()
    try:
        for client in clients:
            echo = client.get("/app/whoami", headers=auth).json()
            assert header_values(echo, "remote-user") == ["alice"]
            assert header_values(echo, "x-edge-device-id") == [impostor.id]
            assert header_values(echo, "remote-groups") == ["user"]

        def users() -> list[list[str]]:
            return [
                header_values(c.get("/app/x", headers=auth).json(), "remote-user") for c in clients
            ]

        # Other processes learn of a CLI change through the event log (within 2 s, as revocations).
        def settles(expected: list[list[str]]) -> None:
            deadline = time.monotonic() + 2.0
            while users() != expected:
                assert time.monotonic() < deadline, f"still {users()}, not {expected}"
                time.sleep(0.05)

        # Without an assigned user the app sees the device id, still not the chosen name.
        proxies.edge.cli("devices", "assign", impostor.id, "-")
        settles([[impostor.id], [impostor.id]])
        proxies.edge.cli("devices", "assign", impostor.id[:12], "bob")
        settles([["bob"], ["bob"]])
    finally:
        for client in clients:
            client.close()
