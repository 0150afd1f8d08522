"""Where the Control UI may connect from, and what it says where it cannot work."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PageOpener
from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

OPEN_CONTROL_SOCKET = """
async ({ url, token }) => new Promise((resolve) => {
  const frames = [];
  const socket = new WebSocket(url);
  socket.onopen = () => socket.send(JSON.stringify({ type: "connect", auth: { token }, device: {}, role: "admin" }));
  socket.onmessage = (event) => frames.push(JSON.parse(event.data).type);
  socket.onclose = (event) => resolve({ code: event.code, reason: event.reason, frames });
})
"""

FOREIGN_PAGE = b"<!doctype html><title>somewhere else</title><p>a page on another origin</p>"


class _ForeignPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(FOREIGN_PAGE)))
        self.end_headers()
        self.wfile.write(FOREIGN_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def foreign_site() -> Iterator[str]:
    """Another web site, on loopback too (so the browser's own local-network rules stay out of it)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForeignPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://attacker.test:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_page_from_another_origin_cannot_open_the_control_socket(
    open_page: PageOpener, gateway: EdgeServer, foreign_site: str
) -> None:
    foreign = open_page(foreign_site)
    result = foreign.page.evaluate(
        OPEN_CONTROL_SOCKET, {"url": gateway.ws_url, "token": GATEWAY_TOKEN}
    )
    assert result == {"code": 1008, "reason": "origin not allowed", "frames": []}


def test_the_gateways_own_origin_is_allowed_to_open_the_control_socket(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    own = open_page(gateway.url, remote_ip="192.0.2.30")
    own.expect_state("token-needed")
    result = own.page.evaluate(OPEN_CONTROL_SOCKET, {"url": gateway.ws_url, "token": GATEWAY_TOKEN})
    assert result["code"] == 1008
    assert result["frames"] == ["challenge"]
    assert result["reason"] != "origin not allowed"


def test_query_string_never_chooses_where_the_ui_connects(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    bait = f"{gateway.url}/?gateway=ws://attacker.test/ws&gatewayUrl=ws://attacker.test/ws&token=stolen#token=stolen"
    remote = open_page(bait, remote_ip="192.0.2.31")
    remote.expect_state("token-needed")
    assert remote.socket_urls
    assert set(remote.socket_urls) == {gateway.ws_url}
    assert remote.storage("edge.gatewayToken") is None


def test_plain_http_on_a_lan_name_says_why_it_cannot_pair_and_what_to_do(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    lan_url = f"http://gateway.test:{gateway.port}/"
    insecure = open_page(lan_url)
    insecure.expect_state("insecure")
    page = insecure.page
    expect(page.get_by_test_id("insecure-message")).to_contain_text("not treat as a secure context")
    expect(page.get_by_test_id("insecure-cli")).to_have_text(
        f"edge pair --url http://gateway.test:{gateway.port} --token <gateway token>"
    )
    expect(page.get_by_test_id("insecure-panel")).to_contain_text("https://")
    expect(page.get_by_test_id("insecure-panel")).to_contain_text("http://localhost")
    expect(page.get_by_test_id("state-title")).to_be_focused()
    assert insecure.socket_urls == []
    insecure.shoot("insecure")
