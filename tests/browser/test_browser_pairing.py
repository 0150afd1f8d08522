"""A remote browser pairs through the Control UI; the operator answers from the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OpenedPage, PageOpener
from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

REMOTE_IP = "203.0.113.7"


def listing(gateway: EdgeServer) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(gateway.cli("devices", "list", "--json").stdout)
    return result


def ask_to_pair(
    browser_page: OpenedPage, token: str = GATEWAY_TOKEN, name: str | None = None
) -> None:
    page = browser_page.page
    page.get_by_label("Gateway token", exact=True).fill(token)
    if name is not None:
        page.get_by_label("Name for this device").fill(name)
    page.get_by_test_id("token-submit").click()


def pair_remote_browser(
    open_page: PageOpener, gateway: EdgeServer, remote_ip: str = REMOTE_IP
) -> OpenedPage:
    """A remote browser that asked with the token and was approved from the CLI; returns it connected."""
    browser_page = open_page(gateway.url, remote_ip=remote_ip)
    browser_page.expect_state("token-needed")
    ask_to_pair(browser_page)
    browser_page.expect_state("waiting")
    request_id = browser_page.page.get_by_test_id("request-id").inner_text()
    gateway.cli("devices", "approve", request_id)
    browser_page.expect_state("connected")
    return browser_page


def test_remote_browser_waits_with_its_request_id_and_connects_by_itself_after_cli_approval(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = open_page(gateway.url, remote_ip=REMOTE_IP)
    page = remote.page
    remote.expect_state("token-needed")
    expect(page.get_by_test_id("close-reason-message")).to_have_attribute(
        "data-close-reason", "unauthorized: gateway token missing"
    )
    expect(page.get_by_label("Gateway token", exact=True)).to_be_focused()
    remote.shoot("token-needed")

    ask_to_pair(remote, name="Alice's laptop")
    remote.expect_state("waiting")
    request_id = page.get_by_test_id("request-id").inner_text()
    pending = listing(gateway)["requests"]
    assert [(r["id"], r["name"], r["clientIp"]) for r in pending] == [
        (request_id, "Alice's laptop", REMOTE_IP)
    ]
    expect(page.get_by_test_id("approve-command")).to_have_text(
        f"edge devices approve {request_id}"
    )
    expect(page.get_by_test_id("copy-command")).to_be_visible()
    expect(page.get_by_test_id("announcer")).to_contain_text("Waiting for approval")
    remote.shoot("waiting")

    gateway.cli("devices", "approve", request_id)
    remote.expect_state("connected")
    expect(page.get_by_test_id("device-role")).to_have_text("user")
    device_id = page.get_by_test_id("device-id").inner_text()
    paired = {d["id"]: d for d in listing(gateway)["devices"]}
    assert paired[device_id]["name"] == "Alice's laptop"
    assert paired[device_id]["role"] == "user"
    assert remote.storage("edge.deviceToken") is None  # the token lives only in the cookie
    assert remote.storage("edge.session") == "1"
    expect(page.get_by_test_id("admin-panel")).to_be_hidden()
    expect(page.get_by_test_id("whoami-ip")).to_have_text(REMOTE_IP)
    remote.shoot("connected")


def test_reload_of_a_paired_browser_reconnects_with_its_device_token(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = pair_remote_browser(open_page, gateway)
    device_id = remote.page.get_by_test_id("device-id").inner_text()
    remote.page.evaluate("window.localStorage.removeItem('edge.gatewayToken')")
    remote.page.reload()
    remote.expect_state("connected")
    expect(remote.page.get_by_test_id("device-id")).to_have_text(device_id)


def test_cli_revocation_turns_the_page_to_revoked(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = pair_remote_browser(open_page, gateway)
    page = remote.page
    device_id = page.get_by_test_id("device-id").inner_text()

    gateway.cli("devices", "revoke", device_id)
    remote.expect_state("revoked")
    reason = page.get_by_test_id("close-reason-message")
    expect(reason).to_have_attribute("data-close-reason", "device revoked")
    expect(reason).to_contain_text("revoked this device")
    expect(page.get_by_test_id("start-over")).to_be_visible()
    assert remote.storage("edge.deviceToken") is None
    remote.shoot("revoked")

    page.get_by_test_id("start-over").click()
    # The gateway token is not kept once a device is paired: the new device asks for it.
    remote.expect_state("token-needed")
    ask_to_pair(remote)
    remote.expect_state("waiting")
    expect(page.get_by_test_id("device-id")).not_to_have_text(device_id)


def test_wrong_token_shows_the_mismatch_message_and_keeps_nothing(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = open_page(gateway.url, remote_ip="203.0.113.8")
    remote.expect_state("token-needed")
    ask_to_pair(remote, token="not-the-gateway-token")
    page = remote.page
    reason = page.get_by_test_id("close-reason-message")
    expect(reason).to_have_attribute("data-close-reason", "unauthorized: gateway token mismatch")
    expect(reason).to_contain_text("does not match")
    expect(reason).to_contain_text("edge token show")
    expect(page.get_by_test_id("state-title")).to_have_text("That gateway token is wrong")
    expect(page.get_by_test_id("token-error")).to_be_visible()
    expect(page.get_by_label("Gateway token", exact=True)).to_be_focused()
    remote.expect_state("token-needed")
    assert remote.storage("edge.gatewayToken") is None
    assert listing(gateway)["requests"] == []
    remote.shoot("token-mismatch")


def test_forget_this_device_revokes_it_and_erases_its_key(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = pair_remote_browser(open_page, gateway)
    page = remote.page
    device_id = page.get_by_test_id("device-id").inner_text()

    page.get_by_test_id("forget-device").click()
    expect(page.get_by_test_id("forget-cancel")).to_be_focused()
    page.get_by_test_id("forget-confirm").click()
    remote.expect_state("forgotten")
    expect(page.get_by_test_id("state-message")).to_contain_text("The gateway revoked it as well")
    assert remote.storage("edge.deviceToken") is None
    assert remote.storage("edge.gatewayToken") is None
    assert device_id not in {d["id"] for d in listing(gateway)["devices"]}
    remote.shoot("forgotten")

    page.get_by_test_id("connect-again").click()
    remote.expect_state("token-needed")
    expect(page.get_by_test_id("device-id")).not_to_have_text(device_id)


def test_invite_link_pairs_at_once_and_leaves_the_address_bar_clean(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    created = json.loads(
        gateway.cli("devices", "invite", "--name", "kiosk", "--url", gateway.url, "--json").stdout
    )
    remote = open_page(created["url"], remote_ip="203.0.113.9")
    remote.expect_state("connected")
    page = remote.page
    assert "#" not in page.url
    assert "invite" not in page.url
    expect(page.get_by_test_id("device-name")).to_have_text("kiosk")
    assert page.evaluate("window.sessionStorage.getItem('edge.invite')") is None

    reused = open_page(created["url"], remote_ip="203.0.113.10")
    reused.expect_state("token-needed")
    expect(reused.page.get_by_test_id("close-reason-message")).to_have_attribute(
        "data-close-reason", "unauthorized: invite invalid"
    )


def test_gateway_restart_shows_reconnecting_and_the_page_comes_back_by_itself(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = pair_remote_browser(open_page, gateway)
    page = remote.page
    gateway.stop()
    remote.expect_state("connecting")
    expect(page.get_by_test_id("state-title")).to_contain_text("restarting")
    expect(page.get_by_test_id("state-message")).to_contain_text("Reconnecting")
    expect(page.get_by_test_id("retry-button")).to_be_visible()
    remote.shoot("reconnecting")
    gateway.start()
    remote.expect_state("connected", timeout=45_000)
