"""The operator's and the device's way through, in real Chromium against a real ``edge serve``:
a lockout that refuses the guesser and spares the paired device, a request that times out on
its own page, and an approval that shows what it grants and grants user unless told."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import expect

from edge.pairing.models import fingerprint
from tests.browser.conftest import PageOpener
from tests.browser.test_browser_dashboard import listing, local_admin, waiting_remote
from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

SHARED_ADDRESS = "198.51.100.40"  # one NAT: a paired browser and a guesser behind it
PROXY = {"trusted_proxies": ["127.0.0.1"]}


def test_a_lockout_refuses_the_guesser_and_leaves_the_paired_browser_connected(
    open_page: PageOpener, edge_server_factory: Callable[..., EdgeServer]
) -> None:
    rate_limit = {"failures": 3, "window": 60, "lockout": 60}
    gateway = edge_server_factory(
        {"proxy": PROXY, "auth": {"token": GATEWAY_TOKEN, "rate_limit": rate_limit}}
    )
    admin = local_admin(open_page, gateway)
    paired, request_id = waiting_remote(open_page, gateway, SHARED_ADDRESS, "office laptop")
    admin.page.get_by_test_id(f"approve-user-{request_id}").click()
    paired.expect_state("connected")

    guesser = open_page(gateway.url, remote_ip=SHARED_ADDRESS)
    guesser.expect_state("token-needed")
    for number, left in ((1, "2 tries left"), (2, "1 try left")):
        guesser.page.get_by_label("Gateway token", exact=True).fill(f"wrong-token-{number}")
        guesser.page.get_by_test_id("token-submit").click()
        expect(guesser.page.get_by_test_id("token-error")).to_contain_text(left)
    guesser.page.get_by_label("Gateway token", exact=True).fill("wrong-token-3")
    guesser.page.get_by_test_id("token-submit").click()
    expect(guesser.page.get_by_test_id("token-error")).to_contain_text("No tries left")
    guesser.page.get_by_label("Gateway token", exact=True).fill(GATEWAY_TOKEN)
    guesser.page.get_by_test_id("token-submit").click()
    guesser.expect_state("locked-out")
    expect(guesser.page.get_by_test_id("state-title")).to_have_text("Too many failed attempts")
    expect(guesser.page.get_by_test_id("retry-note")).to_contain_text("Trying again by itself in")
    guesser.shoot("locked-out")

    # The paired browser on the same address reconnects through the lockout.
    paired.page.reload()
    paired.expect_state("connected")
    expect(paired.page.get_by_test_id("device-role")).to_have_text("user")
    refused = httpx.get(
        f"{gateway.url}/api/devices",
        headers={"authorization": "Bearer guess", "x-forwarded-for": SHARED_ADDRESS},
    )
    assert refused.status_code == 401 and refused.json()["reason"] == "rate_limited"
    assert int(refused.headers["retry-after"]) > 30

    listed = json.loads(gateway.cli("auth", "lockouts", "--json").stdout)["lockouts"]
    assert [entry["client"] for entry in listed] == [SHARED_ADDRESS]
    gateway.cli("auth", "unlock", SHARED_ADDRESS)
    deadline = time.monotonic() + 10
    reason = "rate_limited"
    while reason == "rate_limited" and time.monotonic() < deadline:
        reason = httpx.get(
            f"{gateway.url}/api/devices",
            headers={"authorization": "Bearer guess", "x-forwarded-for": SHARED_ADDRESS},
        ).json()["reason"]
        time.sleep(0.2)
    assert reason == "device_token_invalid", gateway.log()
    assert "lockout of client 198.51.100.40 lifted by cli" in gateway.log()
    guesser.page.get_by_test_id("retry-button").click()
    guesser.expect_state("waiting")  # the right token was kept: it asks at once


def test_the_waiting_page_counts_down_and_times_out_without_asking_again(
    open_page: PageOpener, edge_server_factory: Callable[..., EdgeServer]
) -> None:
    gateway = edge_server_factory({"proxy": PROXY, "pairing": {"request_ttl": 8}})
    remote, request_id = waiting_remote(open_page, gateway, "198.51.100.41", "slow tablet")
    expiry = remote.page.get_by_test_id("waiting-expiry")
    expect(expiry).to_contain_text("Times out in 0:0")
    remote.shoot("waiting-countdown")
    remote.expect_state("timed-out", timeout=20_000)
    expect(remote.page.get_by_test_id("state-title")).to_have_text("Timed out — ask again")
    expect(remote.page.get_by_test_id("state-message")).to_contain_text(request_id)
    remote.shoot("timed-out")
    remote.page.wait_for_timeout(6000)  # a sweep settles the expired request; nothing new comes
    assert listing(gateway)["requests"] == []
    remote.page.get_by_test_id("retry-button").click()
    remote.expect_state("waiting")
    fresh = remote.page.get_by_test_id("request-id").inner_text()
    assert fresh != request_id and [r["id"] for r in listing(gateway)["requests"]] == [fresh]


def test_admin_is_granted_only_through_the_dialog_and_the_cli_grants_user_by_default(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = local_admin(open_page, gateway)
    remote = open_page(gateway.url, remote_ip="198.51.100.42")
    remote.expect_state("token-needed")
    remote.page.get_by_label("Gateway token", exact=True).fill(GATEWAY_TOKEN)
    remote.page.get_by_label("Name for this device").fill("ops tablet")
    remote.page.get_by_test_id("request-admin").check()
    remote.page.get_by_test_id("token-submit").click()
    remote.expect_state("waiting")
    request_id = remote.page.get_by_test_id("request-id").inner_text()
    device_id = remote.page.get_by_test_id("device-id").inner_text()
    shown = remote.page.get_by_test_id("waiting-fingerprint")
    expect(shown).to_have_text(fingerprint(device_id))

    item = admin.page.get_by_test_id(f"pending-{request_id}")
    expect(item).to_contain_text("wants admin")
    expect(admin.page.get_by_test_id(f"pending-fingerprint-{request_id}")).to_have_text(
        fingerprint(device_id)
    )
    admin.page.get_by_test_id(f"approve-admin-{request_id}").click()
    dialog = admin.page.get_by_test_id("approve-dialog")
    expect(dialog).to_be_visible()
    expect(admin.page.get_by_test_id("approve-dialog-role")).to_have_text("admin")
    expect(admin.page.get_by_test_id("approve-dialog-fingerprint")).to_have_text(
        fingerprint(device_id)
    )
    admin.shoot("approve-dialog")
    admin.page.get_by_test_id("approve-dialog-cancel").click()
    expect(dialog).to_be_hidden()
    assert [r["id"] for r in listing(gateway)["requests"]] == [request_id]  # nothing granted

    preview = gateway.cli("devices", "approve", "--latest").stdout
    assert "Nothing was approved" in preview and fingerprint(device_id) in preview
    assert f"edge devices approve {request_id} --role admin" in preview
    assert [r["id"] for r in listing(gateway)["requests"]] == [request_id]
    approved = gateway.cli("devices", "approve", request_id).stdout
    assert "asks for:    admin" in approved and "as user" in approved
    remote.expect_state("connected")
    expect(remote.page.get_by_test_id("device-role")).to_have_text("user")
    expect(remote.page.get_by_test_id("admin-panel")).to_be_hidden()
