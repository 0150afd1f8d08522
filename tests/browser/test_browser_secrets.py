"""No Edge credential is readable by page script once a browser is paired (real Chromium).

The device token lives only in the HttpOnly session cookie; the pasted gateway
token is dropped once that cookie is set; the page reconnects with its device
key and the cookie. A browser that an older version left with a token in
``localStorage`` trades it for the cookie on load, without pairing again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OpenedPage, PageOpener
from tests.browser.test_browser_pairing import pair_remote_browser
from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

# What any script on the dashboard's origin can read.
READABLE = """
async () => {
  const dump = (store) => Object.fromEntries(Object.keys(store).map((k) => [k, store.getItem(k)]));
  const whoami = await (await fetch("/api/whoami", { credentials: "same-origin" })).text();
  return {
    local: dump(window.localStorage),
    session: dump(window.sessionStorage),
    cookie: document.cookie,
    whoami,
  };
}
"""


def session_cookie(page: OpenedPage) -> dict[str, Any]:
    cookies = [c for c in page.page.context.cookies() if c["name"] == "edge_session"]
    assert len(cookies) == 1
    return dict(cookies[0])


def wait_for_session(page: OpenedPage) -> None:
    page.page.wait_for_function("() => window.localStorage.getItem('edge.session') === '1'")


def test_after_pairing_no_script_can_read_an_edge_credential(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = pair_remote_browser(open_page, gateway)
    wait_for_session(remote)
    cookie = session_cookie(remote)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["expires"] > 0  # outlives the browser session, like the device key
    device_token = cookie["value"]
    readable = remote.page.evaluate(READABLE)
    text = repr(readable)
    for secret in (device_token, GATEWAY_TOKEN):
        pieces = {secret[i : i + 8] for i in range(len(secret) - 7)}
        assert not [p for p in pieces if p in text], readable
    assert readable["cookie"] == ""
    assert "edge.deviceToken" not in readable["local"]
    assert "edge.gatewayToken" not in readable["local"]

    # It reconnects with its key and the cookie alone.
    device_id = remote.page.get_by_test_id("device-id").inner_text()
    remote.page.reload()
    remote.expect_state("connected")
    expect(remote.page.get_by_test_id("device-id")).to_have_text(device_id)
    assert "edge.deviceToken" not in remote.page.evaluate(READABLE)["local"]


def test_a_token_stored_by_an_older_version_moves_into_the_cookie_without_pairing_again(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = pair_remote_browser(open_page, gateway)
    wait_for_session(remote)
    device_id = remote.page.get_by_test_id("device-id").inner_text()
    token = session_cookie(remote)["value"]
    # What the previous version left: the tokens in localStorage, no cookie.
    remote.page.context.clear_cookies()
    remote.page.evaluate(
        """([token, gatewayToken]) => {
             window.localStorage.removeItem("edge.session");
             window.localStorage.setItem("edge.deviceToken", token);
             window.localStorage.setItem("edge.gatewayToken", gatewayToken);
           }""",
        [token, GATEWAY_TOKEN],
    )
    remote.page.reload()
    remote.expect_state("connected")
    expect(remote.page.get_by_test_id("device-id")).to_have_text(device_id)
    wait_for_session(remote)
    readable = remote.page.evaluate(READABLE)
    assert "edge.deviceToken" not in readable["local"]
    assert "edge.gatewayToken" not in readable["local"]
    assert session_cookie(remote)["value"] == token
    listing = json.loads(gateway.cli("devices", "list", "--json").stdout)
    assert [d["id"] for d in listing["devices"]] == [device_id]  # the same device, not a new one
