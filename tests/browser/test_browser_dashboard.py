"""The admin dashboard: live pending requests, approval with a click, rename, reject, invites."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OpenedPage, PageOpener
from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration


def listing(gateway: EdgeServer) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(gateway.cli("devices", "list", "--json").stdout)
    return result


def local_admin(open_page: PageOpener, gateway: EdgeServer) -> OpenedPage:
    """A browser on the gateway host itself: local, so approved as admin without a token."""
    admin = open_page(gateway.url)
    admin.expect_state("connected")
    expect(admin.page.get_by_test_id("device-role")).to_have_text("admin")
    expect(admin.page.get_by_test_id("admin-panel")).to_be_visible()
    return admin


def waiting_remote(
    open_page: PageOpener, gateway: EdgeServer, remote_ip: str, name: str
) -> tuple[OpenedPage, str]:
    remote = open_page(gateway.url, remote_ip=remote_ip)
    remote.expect_state("token-needed")
    remote.page.get_by_label("Gateway token", exact=True).fill(GATEWAY_TOKEN)
    remote.page.get_by_label("Name for this device").fill(name)
    remote.page.get_by_test_id("token-submit").click()
    remote.expect_state("waiting")
    return remote, remote.page.get_by_test_id("request-id").inner_text()


def approved_remote(
    open_page: PageOpener, gateway: EdgeServer, remote_ip: str, name: str
) -> tuple[OpenedPage, OpenedPage, str]:
    """A local admin page and a remote browser it approved as user, with the remote's device id."""
    admin = local_admin(open_page, gateway)
    remote, request_id = waiting_remote(open_page, gateway, remote_ip, name)
    admin.page.get_by_test_id(f"approve-user-{request_id}").click()
    remote.expect_state("connected")
    return admin, remote, remote.page.get_by_test_id("device-id").inner_text()


def device_names(gateway: EdgeServer) -> dict[str, str]:
    return {d["id"]: d["name"] for d in listing(gateway)["devices"]}


def test_admin_page_approves_another_browsers_request_with_a_click(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = local_admin(open_page, gateway)
    expect(admin.page.get_by_test_id("pending-empty")).to_be_visible()
    remote, request_id = waiting_remote(open_page, gateway, "198.51.100.20", "Bob's phone")

    item = admin.page.get_by_test_id(f"pending-{request_id}")
    expect(item).to_be_visible()  # pushed by the pairing.requested event; the page never reloads
    expect(item).to_contain_text("Bob's phone")
    expect(item).to_contain_text("198.51.100.20")
    expect(admin.page.get_by_test_id("pending-count")).to_have_text("1")
    admin.shoot("admin-pending")

    admin.page.get_by_test_id(f"approve-user-{request_id}").click()
    remote.expect_state("connected")
    expect(item).to_be_hidden()
    device_id = remote.page.get_by_test_id("device-id").inner_text()
    expect(admin.page.get_by_test_id(f"device-{device_id}")).to_contain_text("Bob's phone")
    expect(admin.page.get_by_test_id(f"device-role-{device_id}")).to_have_text("user")
    approved_by = {d["id"]: d["approvedBy"] for d in listing(gateway)["devices"]}[device_id]
    assert approved_by and approved_by != "cli"
    admin.shoot("admin-dashboard")


def test_admin_renames_and_revokes_from_the_keyboard(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin, remote, device_id = approved_remote(open_page, gateway, "198.51.100.21", "old name")
    page = admin.page

    page.get_by_test_id(f"rename-{device_id}").focus()
    page.keyboard.press("Enter")
    rename_input = page.get_by_test_id(f"rename-input-{device_id}")
    expect(rename_input).to_be_focused()
    rename_input.fill("<b>shared tablet</b>")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id(f"device-name-{device_id}")).to_have_text("<b>shared tablet</b>")
    assert page.locator("b", has_text="shared tablet").count() == 0  # a name is text, never markup
    expect(page.get_by_test_id(f"rename-{device_id}")).to_be_focused()
    assert device_names(gateway)[device_id] == "<b>shared tablet</b>"

    page.get_by_test_id(f"revoke-{device_id}").click()
    expect(page.get_by_test_id(f"revoke-confirm-{device_id}")).to_be_focused()
    page.keyboard.press("Enter")
    remote.expect_state("revoked")
    expect(page.get_by_test_id(f"device-{device_id}")).to_be_hidden()


def test_a_name_being_typed_survives_a_request_that_arrives_meanwhile(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    """Pushed events re-render the lists; the half-typed name, its focus and caret stay put."""
    admin, _, device_id = approved_remote(open_page, gateway, "198.51.100.23", "old name")
    page = admin.page

    page.get_by_test_id(f"rename-{device_id}").click()
    rename_input = page.get_by_test_id(f"rename-input-{device_id}")
    rename_input.fill("shared")
    expect(rename_input).to_be_focused()

    _, second_request = waiting_remote(open_page, gateway, "198.51.100.24", "newcomer")
    expect(page.get_by_test_id(f"pending-{second_request}")).to_be_visible()
    expect(rename_input).to_have_value("shared")
    expect(rename_input).to_be_focused()
    page.keyboard.type(" tablet")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id(f"device-name-{device_id}")).to_have_text("shared tablet")
    assert device_names(gateway)[device_id] == "shared tablet"


def test_rejected_request_leaves_the_list_and_the_browser_stops_asking(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = local_admin(open_page, gateway)
    remote, request_id = waiting_remote(open_page, gateway, "198.51.100.22", "unknown visitor")
    admin.page.get_by_test_id(f"reject-{request_id}").click()
    expect(admin.page.get_by_test_id(f"pending-{request_id}")).to_be_hidden()
    expect(admin.page.get_by_test_id("admin-status")).to_contain_text(
        f"Request {request_id} rejected"
    )
    remote.expect_state("declined")
    expect(remote.page.get_by_test_id("state-title")).to_have_text("Declined by the operator")
    expect(remote.page.get_by_test_id("state-message")).to_contain_text(request_id)
    expect(remote.page.get_by_test_id("retry-button")).to_be_disabled()
    expect(remote.page.get_by_test_id("retry-note")).to_contain_text("may ask again in")
    # The check that found the decline opened nothing, and the page does not ask again.
    remote.page.wait_for_timeout(5000)
    assert listing(gateway)["requests"] == []
    expect(admin.page.get_by_test_id("pending-empty")).to_be_visible()
    remote.shoot("rejected")


def test_invite_form_shows_the_link_and_its_qr_code(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = local_admin(open_page, gateway)
    page = admin.page
    page.get_by_label("Role").select_option("user")
    page.get_by_label("Name (optional)").fill("kitchen display")
    page.get_by_test_id("invite-submit").click()
    url = page.get_by_test_id("invite-url")
    expect(url).to_be_visible()
    link = url.input_value()
    assert link.startswith(f"{gateway.url}/#invite=")
    qr = page.get_by_test_id("invite-qr")
    expect(qr).to_be_visible()
    assert qr.evaluate("image => image.complete && image.naturalWidth > 0")
    invites = page.get_by_test_id("invite-list")
    expect(invites).to_contain_text("kitchen display")
    admin.shoot("admin-invite")

    remote = open_page(link, remote_ip="198.51.100.23")
    remote.expect_state("connected")
    expect(remote.page.get_by_test_id("device-name")).to_have_text("kitchen display")
    expect(invites).not_to_contain_text("kitchen display")


def test_user_device_asks_for_admin_and_an_admin_grants_it(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = local_admin(open_page, gateway)
    remote, request_id = waiting_remote(open_page, gateway, "198.51.100.24", "carol")
    admin.page.get_by_test_id(f"approve-user-{request_id}").click()
    remote.expect_state("connected")
    expect(remote.page.get_by_test_id("admin-panel")).to_be_hidden()

    remote.page.get_by_test_id("request-admin-upgrade").click()
    remote.expect_state("waiting")
    expect(remote.page.get_by_test_id("state-title")).to_have_text("Waiting for admin approval")
    expect(remote.page.get_by_test_id("cancel-upgrade")).to_be_visible()
    upgrade_id = remote.page.get_by_test_id("request-id").inner_text()
    expect(admin.page.get_by_test_id(f"pending-{upgrade_id}")).to_contain_text(
        "wants admin (upgrade)"
    )

    admin.page.get_by_test_id(f"approve-admin-{upgrade_id}").click()
    admin.page.get_by_test_id("approve-dialog-confirm").click()
    remote.expect_state("connected")
    expect(remote.page.get_by_test_id("device-role")).to_have_text("admin")
    expect(remote.page.get_by_test_id("admin-panel")).to_be_visible()


def test_stay_a_user_withdraws_the_admin_request_and_reconnects_as_user(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = local_admin(open_page, gateway)
    remote, request_id = waiting_remote(open_page, gateway, "198.51.100.25", "dave")
    admin.page.get_by_test_id(f"approve-user-{request_id}").click()
    remote.expect_state("connected")
    remote.page.get_by_test_id("request-admin-upgrade").click()
    remote.expect_state("waiting")

    remote.page.get_by_test_id("cancel-upgrade").click()
    remote.expect_state("connected")
    expect(remote.page.get_by_test_id("device-role")).to_have_text("user")
    assert remote.storage("edge.requestAdmin") is None


def test_the_approve_row_assigns_the_user_upstream_apps_see(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = local_admin(open_page, gateway)
    remote, request_id = waiting_remote(open_page, gateway, "198.51.100.21", "admin")
    login = admin.page.get_by_test_id(f"approve-login-{request_id}")
    login.fill("Not A Login")
    admin.page.get_by_test_id(f"approve-user-{request_id}").click()
    expect(admin.page.get_by_test_id("admin-status")).to_contain_text("is not a user name")
    assert [r["id"] for r in listing(gateway)["requests"]] == [request_id]  # nothing was sent
    login.fill("carol")
    admin.page.get_by_test_id(f"approve-user-{request_id}").click()
    remote.expect_state("connected")
    device_id = remote.page.get_by_test_id("device-id").inner_text()
    expect(admin.page.get_by_test_id(f"device-user-{device_id}")).to_have_text("carol")
    users = {d["id"]: d["user"] for d in listing(gateway)["devices"]}
    assert users[device_id] == "carol"  # the device that named itself "admin" is carol upstream
