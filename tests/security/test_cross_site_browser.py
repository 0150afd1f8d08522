"""Cross-site attacks from a real Chromium page against a gateway on the same machine.

The attacker's page is served from ``http://attacker.test:<port>/`` (Chromium
maps ``*.test`` to 127.0.0.1, nothing leaves loopback). It tries to open the
control socket of a local gateway, to read the API with the user's session
cookie, and to reach the gateway through a rebound name.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import Device
from tests.integration.conftest import EdgeServer

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="pip install playwright (a test extra)"
)

from tests.browser.conftest import browser  # noqa: E402, F401  (fixture)

pytestmark = pytest.mark.integration

OPEN_CONTROL_SOCKET = """
async ({ url, frame }) => new Promise((resolve) => {
  const frames = [];
  const socket = new WebSocket(url);
  socket.onopen = () => socket.send(JSON.stringify(frame));
  socket.onmessage = (event) => frames.push(JSON.parse(event.data).type);
  socket.onclose = (event) => resolve({ code: event.code, reason: event.reason, frames });
})
"""

READ_WITH_CREDENTIALS = """
async (url) => {
  const outcome = {};
  try {
    const response = await fetch(url, { credentials: "include" });
    outcome.cors = { status: response.status, body: await response.text() };
  } catch (error) {
    outcome.cors = { error: String(error) };
  }
  const blind = await fetch(url, { credentials: "include", mode: "no-cors" });
  outcome.noCors = { type: blind.type, status: blind.status };
  return outcome;
}
"""

ATTACKER_PAGE = b"<!doctype html><title>attacker</title><p>nothing to see here</p>"


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(ATTACKER_PAGE)))
        self.end_headers()
        self.wfile.write(ATTACKER_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def attacker_site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://attacker.test:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:  # noqa: F811
    made = browser.new_context()
    yield made
    made.close()


def _admin_token(server: EdgeServer) -> str:
    """A device token from a local (direct loopback) pairing: an admin's."""
    device = Device("the user's laptop")
    with connect(server.ws_url, proxy=None, open_timeout=10) as ws:
        challenge = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {}, "admin")))
        hello = json.loads(ws.recv(timeout=10))
    assert hello["type"] == "hello"
    return str(hello["deviceToken"])


def _connect_frame() -> dict[str, Any]:
    return {"type": "connect", "auth": {}, "device": {}, "role": "admin"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_foreign_page_cannot_open_the_control_socket_of_a_local_gateway(
    edge_server_factory: Callable[..., EdgeServer], context: Any, attacker_site: str, host: str
) -> None:
    gateway = edge_server_factory({"logging": {"level": "warning"}})
    page = context.new_page()
    page.goto(attacker_site)
    result = page.evaluate(
        OPEN_CONTROL_SOCKET,
        {"url": f"ws://{host}:{gateway.port}/ws", "frame": _connect_frame()},
    )
    assert result == {"code": 1008, "reason": "origin not allowed", "frames": []}


def test_a_foreign_page_cannot_use_or_read_with_the_session_cookie(
    edge_server_factory: Callable[..., EdgeServer],
    browser: Any,  # noqa: F811 - the fixture
    attacker_site: str,
) -> None:
    gateway = edge_server_factory(
        {
            "proxy": {"trusted_proxies": ["127.0.0.1"]},
            "logging": {"level": "info", "format": "json", "access_log": True},
        }
    )
    token = _admin_token(gateway)
    # The user's browser is remote (behind the "proxy"), so it needs its session cookie.
    user = browser.new_context(extra_http_headers={"X-Forwarded-For": "192.0.2.40"})
    try:
        own = user.new_page()
        own.goto(f"{gateway.url}/healthz")
        made = own.evaluate(
            """async (token) => (await fetch("/api/session", {
                 method: "POST", headers: { Authorization: "Bearer " + token } })).status""",
            token,
        )
        assert made == 200
        assert own.evaluate('async () => (await fetch("/api/devices")).status') == 200

        attacker = user.new_page()
        attacker.goto(attacker_site)
        outcome = attacker.evaluate(READ_WITH_CREDENTIALS, f"{gateway.url}/api/devices")
    finally:
        user.close()
    assert "error" in outcome["cors"], f"the attacker read the answer: {outcome['cors']}"
    assert outcome["noCors"] == {"type": "opaque", "status": 0}
    access = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    statuses = [entry["status"] for entry in access if entry.get("path") == "/api/devices"]
    # One 200 from the gateway's own page; the attacker's two requests arrived without the cookie.
    assert statuses == [200, 401, 401]


def test_a_rebound_name_serves_the_gateway_to_a_page_that_is_not_local(
    edge_server_factory: Callable[..., EdgeServer], context: Any
) -> None:
    gateway = edge_server_factory({"logging": {"level": "warning"}})
    rebound = f"http://rebind.test:{gateway.port}"
    page = context.new_page()
    page.goto(f"{rebound}/healthz")
    whoami = page.evaluate('async () => (await fetch("/api/whoami")).json()')
    assert whoami["local"] is False and whoami["host"] == f"rebind.test:{gateway.port}"
    assert page.evaluate('async () => (await fetch("/api/devices")).status') == 401
    result = page.evaluate(
        OPEN_CONTROL_SOCKET,
        {"url": f"ws://rebind.test:{gateway.port}/ws", "frame": _connect_frame()},
    )
    assert result["code"] == 1008 and "hello" not in result["frames"]
