"""A phone's Chromium through real nginx (the shipped ``deploy/nginx`` files) to ``edge serve``.

The mistakes a first deployment makes, seen from the screen they show up on:
``proxy.trusted_proxies`` left empty must be named as the cause, with the fix
to copy, and the page must get through by itself once the operator applied
it; the "a reverse proxy runs on this host" warning must clear once a request
forwarded the right way has arrived.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import expect

from tests.browser.conftest import PageOpener
from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer, free_port
from tests.integration.proxies import Nginx, client_from, start_nginx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]

# A phone: small viewport, touch, a mobile user agent.
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0 Mobile Safari/537.36"
    ),
    "ignore_https_errors": True,  # nginx's certificate is the test's own
}


@dataclass
class Proxied:
    edge: EdgeServer
    nginx: Nginx

    def set_config(self, **sections: Any) -> None:
        config = yaml.safe_load(self.edge.config_path.read_text())
        for key, value in sections.items():
            config[key] = {**config.get(key, {}), **value}
        self.edge.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture
def proxied_factory(
    edge_server_factory: Callable[..., EdgeServer], tmp_path: Path
) -> Iterator[Callable[..., Proxied]]:
    started: list[Nginx] = []

    def factory(overrides: dict[str, Any] | None = None) -> Proxied:
        edge = edge_server_factory(overrides or {}, start=False)
        # nginx first, as on a real host: the gateway looks for it as it starts. Nothing
        # listens on the app port: only nginx's /app/ location would use it.
        nginx = start_nginx(tmp_path / f"nginx{len(started)}", edge.port, free_port())
        started.append(nginx)
        edge.start()
        return Proxied(edge, nginx)

    yield factory
    for nginx in started:
        nginx.stop()


def test_an_untrusted_proxy_is_named_with_its_fix_and_the_page_connects_once_it_is_applied(
    open_page: PageOpener, proxied_factory: Callable[..., Proxied]
) -> None:
    stack = proxied_factory()  # proxy.trusted_proxies left empty: the default
    phone = open_page(
        f"{stack.nginx.url}/", permissions=["clipboard-read", "clipboard-write"], **PHONE
    )
    page = phone.page
    phone.expect_state("error")
    title = page.get_by_test_id("state-title")
    expect(title).to_have_text("The gateway does not trust its reverse proxy")
    card = page.get_by_test_id("state")
    expect(card).to_contain_text("proxy.trusted_proxies")
    expect(card).not_to_contain_text("auth.allowed_origins")
    expect(card).not_to_contain_text("1008")
    snippet = page.get_by_test_id("fix-snippet")
    expect(snippet).to_be_visible()
    expect(snippet).to_have_text("proxy:\n  trusted_proxies: [127.0.0.1]")
    expect(page.get_by_test_id("fix-then")).to_have_text("edge gateway reload")
    page.get_by_test_id("fix-copy").click()
    expect(page.get_by_test_id("fix-copy")).to_have_text("Copied")
    assert (
        page.evaluate("navigator.clipboard.readText()") == "proxy:\n  trusted_proxies: [127.0.0.1]"
    )
    # The raw close stays in the diagnostics, collapsed by default.
    expect(page.get_by_test_id("last-close")).to_be_hidden()
    expect(page.get_by_test_id("last-close")).to_contain_text("origin not allowed")
    phone.shoot("phone-untrusted-proxy")

    # The doctor names the same cause: from the refusals the gateway recorded, and from a
    # probe it sends through nginx itself.
    probe = ("--probe", stack.nginx.url, "--ca-file", str(stack.nginx.cert))
    deadline = time.monotonic() + 20
    while True:
        doctor = stack.edge.cli("doctor", "--json", *probe, check=False)
        findings = json.loads(doctor.stdout)
        refusals = [f for f in findings if f["check"] == "refusals" and f["level"] == "error"]
        if refusals or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert doctor.returncode == 1
    (refused,) = refusals
    assert (
        "127.0.0.1" in refused["message"] and "not in proxy.trusted_proxies" in refused["message"]
    )
    assert refused["fix"] == (
        "set `proxy.trusted_proxies: [127.0.0.1]` in the configuration file, then run "
        "`edge gateway reload`"
    )
    assert any(f["check"] == "refusals" and "origin_not_allowed" in f["message"] for f in findings)
    (probed,) = [f for f in findings if f["check"] == "probe"]
    assert probed["level"] == "error" and "not in proxy.trusted_proxies" in probed["message"]

    # The operator does exactly what the page says; the page gets through by itself.
    stack.set_config(proxy={"trusted_proxies": ["127.0.0.1"]})
    reloaded = stack.edge.cli("gateway", "reload")
    assert "reloaded" in reloaded.stdout, reloaded.stdout
    phone.expect_state("token-needed", timeout=40_000)
    expect(page.get_by_test_id("fix-panel")).to_be_hidden()


def test_the_same_host_proxy_warning_clears_after_a_correctly_forwarded_request(
    open_page: PageOpener, proxied_factory: Callable[..., Proxied]
) -> None:
    # local.peer_check: address is what makes nginx on this host worth a warning: a route
    # of it that forwarded no header would make its visitors local.
    stack = proxied_factory(
        {"proxy": {"trusted_proxies": ["127.0.0.1"]}, "local": {"peer_check": "address"}}
    )
    assert "nginx is running on this host" in stack.edge.log()
    admin = open_page(f"{stack.edge.url}/")  # the gateway host's own browser: an admin
    admin.expect_state("connected")
    page = admin.page
    page.get_by_test_id("diagnostics").locator("summary").click()
    proxy = page.get_by_test_id("proxy-warning")
    expect(proxy).to_be_visible()
    expect(proxy).to_contain_text("nginx is running on this host")

    with client_from("127.0.0.2", verify=stack.nginx.tls(), base_url=stack.nginx.url) as http:
        seen = http.get("/api/whoami").json()
    assert seen["trustedPeer"] is True and seen["client"]["ip"] == "127.0.0.2"

    page.get_by_test_id("whoami-refresh").click()
    expect(proxy).to_be_hidden()
    forwarded = page.get_by_test_id("proxy-forwarded")
    expect(forwarded).to_contain_text("127.0.0.1")
    expect(forwarded).to_contain_text("x-forwarded-for")
    doctor = stack.edge.cli("doctor", "--json", check=False)
    findings = {f["check"]: f for f in yaml.safe_load(doctor.stdout)}
    assert findings["local.loopback"]["level"] == "ok", findings["local.loopback"]
    assert "forwarded" in findings["local.loopback"]["message"]
    admin.shoot("dashboard-proxy-warning-cleared")


def test_the_tab_title_counts_the_requests_waiting_and_the_raw_close_stays_in_diagnostics(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = open_page(f"{gateway.url}/")
    admin.expect_state("connected")
    expect(admin.page).to_have_title("Connected — Edge")
    remote = open_page(f"{gateway.url}/", remote_ip="203.0.113.9")
    remote.expect_state("token-needed")
    remote.page.get_by_test_id("token-input").fill("not-the-gateway-token-at-all-0123")
    remote.page.get_by_test_id("token-submit").click()
    card = remote.page.get_by_test_id("state")
    expect(card).to_contain_text("That gateway token is wrong")
    expect(card).not_to_contain_text("1008")
    expect(remote.page.get_by_test_id("last-close")).to_contain_text("code 1008")
    remote.page.get_by_test_id("token-input").fill(GATEWAY_TOKEN)
    remote.page.get_by_test_id("token-submit").click()
    remote.expect_state("waiting")
    expect(admin.page).to_have_title("(1) Connected — Edge")
    request_id = remote.page.get_by_test_id("request-id").inner_text().strip()
    gateway.cli("devices", "approve", request_id)
    remote.expect_state("connected")
    expect(admin.page).to_have_title("Connected — Edge")


def test_a_direct_local_page_names_the_gateway_not_the_network_when_it_goes_away(
    open_page: PageOpener, edge_server_factory: Callable[..., EdgeServer]
) -> None:
    edge = edge_server_factory({"server": {"public_url": "https://edge.example.com"}})
    admin = open_page(f"{edge.url}/")
    admin.expect_state("connected")
    page = admin.page
    page.get_by_test_id("diagnostics").locator("summary").click()
    expect(page.get_by_test_id("public-url")).to_contain_text("https://edge.example.com")
    edge.stop(signal.SIGKILL)  # no close frame: the browser sees 1006
    message = page.get_by_test_id("state-message")
    expect(message).to_contain_text("is edge serve still running")
    expect(message).not_to_contain_text("reverse proxy")
