"""A sibling origin cannot change anything with the admin's session cookie (real Chromium).

The admin's browser holds Edge's session cookie for ``edge.example.test``. Pages
on ``wiki.example.test`` (another host name of the same site) and on another
port of ``edge.example.test`` are same-site, so ``SameSite=Strict`` lets the
browser attach the cookie to what they send. Each tries to approve a pending
admin request: a ``text/plain`` form carrying JSON, a urlencoded form, a
credentialed ``no-cors`` ``fetch`` with a ``text/plain`` body (a simple
request: sent with the cookie), a JSON ``fetch`` (which needs a CORS
preflight the gateway never grants) and a top-level navigation. The request must stay
pending; the gateway's own page then approves it with the same cookie, which
shows the cookie was good all along.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import GATEWAY_TOKEN, Device
from tests.integration.conftest import EdgeServer

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="pip install playwright (a test extra)"
)

from tests.browser.conftest import browser, static_page  # noqa: E402, F401  (fixture)

pytestmark = pytest.mark.integration

USER_IP = "192.0.2.40"  # the admin's browser, behind the "proxy"
PAGE = b"<!doctype html><title>wiki</title><p>an ordinary page of the same site</p>"

FORM_POST = """
({ action, enctype, name, value }) => {
  const form = document.createElement("form");
  form.method = "POST";
  form.action = action;
  form.enctype = enctype;
  const input = document.createElement("input");
  input.name = name;
  input.value = value;
  form.appendChild(input);
  document.body.appendChild(form);
  form.submit();
}
"""

FETCHES = """
async (url) => {
  const outcome = {};
  try {
    const response = await fetch(url, {
      method: "POST", credentials: "include",
      headers: { "content-type": "application/json" }, body: '{"role":"admin"}',
    });
    outcome.json = response.status;
  } catch (error) {
    outcome.json = "blocked";
  }
  // A simple request (text/plain body): the browser sends it with the cookie, unreadable.
  const blind = await fetch(url, {
    method: "POST", credentials: "include", mode: "no-cors", body: '{"role":"admin"}',
  });
  outcome.noCors = blind.type;
  return outcome;
}
"""


@pytest.fixture
def sibling_port() -> Iterator[int]:
    with static_page(PAGE) as port:
        yield port


def _hello(
    server: EdgeServer, device: Device, auth: dict[str, str], role: str, **headers: str
) -> Any:
    with connect(server.ws_url, proxy=None, open_timeout=10, additional_headers=headers) as ws:
        challenge = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], auth, role)))
        return json.loads(ws.recv(timeout=10))


def _pending(server: EdgeServer) -> list[str]:
    listing = json.loads(server.cli("devices", "list", "--json").stdout)
    return [request["id"] for request in listing["requests"]]


@pytest.mark.parametrize("sibling_host", ["wiki.example.test", "edge.example.test"])
def test_a_same_site_page_cannot_approve_with_the_admins_cookie(
    edge_server_factory: Callable[..., EdgeServer],
    browser: Any,  # noqa: F811 - the fixture
    sibling_port: int,
    sibling_host: str,
) -> None:
    gateway = edge_server_factory(
        {
            "proxy": {"trusted_proxies": ["127.0.0.1"]},
            "logging": {"level": "info", "format": "json", "access_log": True},
        }
    )
    admin_token = _hello(gateway, Device("admin laptop"), {}, "admin")["deviceToken"]
    asked = _hello(
        gateway,
        Device("intruder"),
        {"token": GATEWAY_TOKEN},
        "admin",
        **{"X-Forwarded-For": "198.51.100.7"},
    )
    request_id = asked["requestId"]
    approve = f"http://edge.example.test:{gateway.port}/api/requests/{request_id}/approve"
    context = browser.new_context(extra_http_headers={"X-Forwarded-For": USER_IP})
    try:
        dashboard = context.new_page()
        dashboard.goto(f"http://edge.example.test:{gateway.port}/healthz")
        status = dashboard.evaluate(
            """async (token) => (await fetch("/api/session", {
                 method: "POST", headers: { Authorization: "Bearer " + token } })).status""",
            admin_token,
        )
        assert status == 200
        assert [c["name"] for c in context.cookies()] == ["edge_session"]

        sibling = context.new_page()
        sibling_url = f"http://{sibling_host}:{sibling_port}/"
        for enctype, name, value in (
            ("text/plain", '{"role":"admin","x":"', '"}'),
            ("application/x-www-form-urlencoded", "role", "admin"),
        ):
            sibling.goto(sibling_url)
            with sibling.expect_navigation():
                sibling.evaluate(
                    FORM_POST, {"action": approve, "enctype": enctype, "name": name, "value": value}
                )
            refused = json.loads(sibling.inner_text("body"))
            assert (refused["error"], refused["reason"]) == ("forbidden", "cross_site_write")
        sibling.goto(sibling_url)
        fetched = sibling.evaluate(FETCHES, approve)
        sibling.goto(approve)  # a top-level navigation is a GET: it changes nothing
        assert _pending(gateway) == [request_id]

        # The gateway's own page, with the very same cookie, may approve.
        approved = dashboard.evaluate(
            """async (url) => (await fetch(url, { method: "POST",
                 headers: { "content-type": "application/json" }, body: "{}" })).status""",
            approve,
        )
    finally:
        context.close()
    assert fetched == {"json": "blocked", "noCors": "opaque"}
    assert approved == 200
    assert _pending(gateway) == []
    access = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    writes = [
        (entry["status"], entry.get("reason"))
        for entry in access
        if entry.get("path") == f"/api/requests/{request_id}/approve"
        and entry.get("method") == "POST"
    ]
    # Both forms and the simple fetch reached the gateway with the cookie and were refused
    # (cross_site_write is only ever judged for a cookie); the JSON fetch stopped at its
    # preflight; the dashboard's own write went through.
    assert writes == [(403, "cross_site_write")] * 3 + [(200, None)]
