"""Real Chromium against a real ``edge serve`` with the default rules (no proxy, peer_check uid).

The browser runs as the gateway's own user: from the gateway's own origin it
is an admin at once. A page served on another loopback port is another site,
even in that same browser: it can neither pair as admin over ``/ws`` nor act
as local over HTTP.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PageOpener, static_page
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

OPEN_CONTROL_SOCKET = """
async ({ url }) => new Promise((resolve) => {
  const frames = [];
  const socket = new WebSocket(url);
  socket.onopen = () => socket.send(JSON.stringify({ type: "connect", auth: {}, device: {}, role: "admin" }));
  socket.onmessage = (event) => frames.push(JSON.parse(event.data).type);
  socket.onclose = (event) => resolve({ code: event.code, reason: event.reason, frames });
})
"""

# A "simple" cross-site request: no preflight, so the browser sends it with its Origin and
# whatever credentials it has; only the gateway can refuse it.
POST_INVITE = """
async ({ url }) => {
  try {
    await fetch(url, { method: "POST", mode: "no-cors", credentials: "include",
                       headers: { "content-type": "text/plain" }, body: '{"role": "admin"}' });
    return "sent";
  } catch (error) {
    return String(error);
  }
}
"""

PAGE = b"<!doctype html><title>dev server</title><p>an app on another port of this machine</p>"


@pytest.fixture
def other_port() -> Iterator[int]:
    """Another web server on loopback: a dev server, a local app, the app Edge protects."""
    with static_page(PAGE) as port:
        yield port


@pytest.fixture
def edge(edge_server_factory: Callable[..., EdgeServer]) -> EdgeServer:
    server = edge_server_factory()
    assert "peer_check" not in server.config_path.read_text()  # the default: uid
    return server


def test_a_local_browser_of_the_gateways_own_user_is_an_admin_straight_away(
    open_page: PageOpener, edge: EdgeServer
) -> None:
    admin = open_page(edge.url)
    admin.expect_state("connected")
    expect(admin.page.get_by_test_id("device-role")).to_have_text("admin")
    expect(admin.page.get_by_test_id("admin-panel")).to_be_visible()
    owner = admin.page.get_by_test_id("whoami-owner")
    expect(owner).to_contain_text(f"(uid {os.geteuid()}), the gateway's own user")
    expect(owner).to_contain_text("local.peer_check: uid")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_page_on_another_loopback_port_cannot_pair_as_admin(
    open_page: PageOpener, edge: EdgeServer, other_port: int, host: str
) -> None:
    page = open_page(f"http://{host}:{other_port}/")
    result = page.page.evaluate(OPEN_CONTROL_SOCKET, {"url": edge.ws_url})
    assert result == {"code": 1008, "reason": "origin not allowed", "frames": []}
    listed = edge.cli("devices", "list", "--json").stdout
    assert '"role": "admin"' not in listed


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_page_on_another_loopback_port_cannot_act_as_local_over_http(
    open_page: PageOpener, edge: EdgeServer, other_port: int, host: str
) -> None:
    page = open_page(f"http://{host}:{other_port}/")
    assert page.page.evaluate(POST_INVITE, {"url": f"{edge.url}/api/invites"}) == "sent"
    with httpx.Client(base_url=edge.url, trust_env=False, timeout=10) as operator:
        invites = operator.get("/api/invites")
        metrics = operator.get("/metrics").text
    assert invites.status_code == 200 and invites.json() == []
    assert 'edge_requests_total{decision="denied",kind="http"} 1.0' in metrics
