"""An app behind Edge cannot read, use or plant an Edge credential (real Chromium).

The admin's browser holds Edge's session cookie for the dashboard's host. An
upstream that the operator put on the dashboard's own origin
(``share_control_origin: true``) is served with ``Content-Security-Policy:
sandbox``, so its pages run in an opaque origin: a script there (the app's
own, or an XSS in it) can read no storage or cookie of the dashboard's, and a
request it makes is cross-site, so the browser sends the ``SameSite=Strict``
cookie with none of them. Its responses also cannot set Edge's cookie.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import Device
from tests.integration.conftest import EdgeServer
from tests.integration.proxies import UvicornThread, header_values, upstream_app

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="pip install playwright (a test extra)"
)

from tests.browser.conftest import browser  # noqa: E402, F401  (fixture)

pytestmark = pytest.mark.integration

USER_IP = "192.0.2.41"  # the admin's browser, behind the "proxy"

# What a script on the app's page tries with the admin's browser.
ATTACK = """
async () => {
  const out = {};
  const within = (promise) => Promise.race([
    promise, new Promise((resolve) => setTimeout(() => resolve("timed out"), 5000)),
  ]);
  try { out.storage = Object.keys(window.localStorage); } catch (e) { out.storage = "blocked"; }
  try { out.cookie = document.cookie; } catch (e) { out.cookie = "blocked"; }
  try {
    out.devices = await within(fetch("/api/devices", { credentials: "include" }).then((r) => r.status));
  } catch (e) { out.devices = "blocked"; }
  try {
    out.invite = await within(fetch("/api/invites", {
      method: "POST", credentials: "include",
      headers: { "content-type": "application/json" }, body: '{"role":"admin"}',
    }).then((r) => r.status));
  } catch (e) { out.invite = "blocked"; }
  // A simple request: the browser sends it without asking, and the answer stays unreadable.
  try {
    out.blind = await within(fetch("/api/invites", {
      method: "POST", credentials: "include", mode: "no-cors", body: '{"role":"admin"}',
    }).then((r) => r.type));
  } catch (e) { out.blind = "blocked"; }
  return out;
}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[UvicornThread]:
    with UvicornThread(upstream_app) as server:
        yield server


def _admin_token(server: EdgeServer) -> str:
    """A direct loopback device of the gateway's own user: an admin at once."""
    device = Device("admin laptop")
    with connect(server.ws_url, proxy=None, open_timeout=10) as ws:
        challenge = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {}, "admin")))
        hello = json.loads(ws.recv(timeout=10))
    assert hello["type"] == "hello" and hello["device"]["role"] == "admin"
    return str(hello["deviceToken"])


def _invites(server: EdgeServer) -> list[Any]:
    listing = json.loads(server.cli("devices", "list", "--json").stdout)
    return list(listing["invites"])


def test_a_script_on_an_app_page_cannot_read_or_use_the_admins_credentials(
    edge_server_factory: Callable[..., EdgeServer],
    browser: Any,  # noqa: F811 - the fixture
    upstream: UvicornThread,
) -> None:
    gateway = edge_server_factory(
        {
            "proxy": {"trusted_proxies": ["127.0.0.1"]},
            "upstreams": [
                {"prefix": "/shared/", "url": upstream.url, "share_control_origin": True}
            ],
        }
    )
    token = _admin_token(gateway)
    invites_before = _invites(gateway)
    origin = f"http://edge.example.test:{gateway.port}"
    context = browser.new_context(extra_http_headers={"X-Forwarded-For": USER_IP})
    try:
        dashboard = context.new_page()
        dashboard.goto(f"{origin}/healthz")
        status = dashboard.evaluate(
            """async (token) => (await fetch("/api/session", {
                 method: "POST", headers: { Authorization: "Bearer " + token } })).status""",
            token,
        )
        assert status == 200
        # The dashboard's own origin may use the cookie: it is a working admin credential.
        assert dashboard.evaluate("async () => (await fetch('/api/devices')).status") == 200

        app = context.new_page()
        response = app.goto(f"{origin}/shared/page")
        assert response is not None and response.status == 200
        csp = response.headers.get("content-security-policy")
        echo = json.loads(app.inner_text("body"))
        # The page really came through Edge on the admin's cookie, which the app never saw.
        assert header_values(echo, "remote-groups") == ["admin"]
        assert not [c for c in header_values(echo, "cookie") if "edge_session" in c]
        attempt = app.evaluate(ATTACK)

        # The app answers with a Set-Cookie for Edge's session: the browser never gets it.
        planted = context.new_page()
        planted.goto(f"{origin}/shared/x?set_cookie_named=edge_session&set_cookie=kept")
        cookies = {c["name"]: c["value"] for c in context.cookies()}
    finally:
        context.close()
    assert attempt["devices"] == "blocked" and attempt["invite"] == "blocked", attempt
    assert attempt["storage"] == "blocked" and attempt["cookie"] == "blocked"
    assert attempt["devices"] == "blocked" and attempt["invite"] == "blocked"
    assert attempt["blind"] in ("opaque", "blocked")
    assert _invites(gateway) == invites_before  # nothing was minted
    assert cookies["edge_session"] == token  # the admin's session, untouched
    assert cookies.get("app_cookie") == "kept"  # the app's own cookies still work
    assert csp == "sandbox"
