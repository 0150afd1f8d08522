"""No dead ends: a browser refused by nginx ``auth_request`` pairs and lands on the page it
wanted; the dashboard tells devices apart (presence, last seen, search) and replaces twins.

The nginx tests run the shipped ``deploy/nginx`` configuration in front of a real
``edge serve`` and a real app, with Chromium on nginx's TLS port (its certificate is
the test's own, so the context ignores certificate errors; the origin is still https).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OpenedPage, PageOpener
from tests.browser.test_browser_pairing import ask_to_pair, pair_remote_browser
from tests.integration.conftest import EdgeServer, free_port
from tests.integration.proxies import Nginx, running, start_nginx, start_upstream_process

pytestmark = pytest.mark.integration

needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


@dataclass
class Site:
    edge: EdgeServer
    nginx: Nginx

    @property
    def url(self) -> str:
        return self.nginx.url


@pytest.fixture
def site(edge_server_factory: Callable[..., EdgeServer], tmp_path: Path) -> Iterator[Site]:
    upstream = start_upstream_process(tmp_path)
    edge = edge_server_factory(
        {
            "proxy": {"trusted_proxies": ["127.0.0.1"]},
            "upstreams": [
                {
                    "prefix": "/svc/",
                    "url": f"http://127.0.0.1:{upstream.port}",
                    "share_control_origin": True,
                    "name": "service",
                }
            ],
        }
    )
    nginx = start_nginx(tmp_path / "nginx", edge.port, upstream.port)
    with running(upstream, nginx):
        yield Site(edge, nginx)


def listing(edge: EdgeServer, *extra: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(edge.cli("devices", "list", "--json", *extra).stdout)
    return result


def echoed(page: Any) -> dict[str, Any]:
    """The app's echo of the request the browser made (its JSON body)."""
    body: dict[str, Any] = json.loads(page.locator("body").inner_text())
    return body


def pair_through_nginx(open_page: PageOpener, site: Site, url: str) -> OpenedPage:
    """Open ``url`` through nginx in a fresh profile, ask to pair, approve from the CLI."""
    opened = open_page(url, ignore_https_errors=True)
    opened.expect_state("token-needed")
    ask_to_pair(opened, name="phone")
    opened.expect_state("waiting")
    request_id = opened.page.get_by_test_id("request-id").inner_text()
    site.edge.cli("devices", "approve", request_id)
    return opened


@needs_nginx
def test_pairing_after_an_auth_request_refusal_returns_to_the_app_page(
    open_page: PageOpener, site: Site
) -> None:
    wanted = f"{site.url}/app/report?id=7&view=full"
    opened = open_page(wanted, ignore_https_errors=True)
    page = opened.page
    opened.expect_state("token-needed")
    # nginx's error_page sent the browser to the dashboard with the page it wanted in rd.
    assert page.url == f"{site.url}/?rd={quote('/app/report?id=7&view=full', safe='')}"
    ask_to_pair(opened, name="phone")
    opened.expect_state("waiting")
    request_id = page.get_by_test_id("request-id").inner_text()
    site.edge.cli("devices", "approve", request_id)
    # Once connected and holding the session cookie, the page goes back by itself.
    page.wait_for_url(wanted, timeout=20_000)
    echo = echoed(page)
    assert (echo["path"], echo["query"]) == ("/app/report", "id=7&view=full")
    (device,) = listing(site.edge)["devices"]
    remote_users = [v for k, v in echo["headers"] if k.lower() == "remote-user"]
    assert remote_users == [device["id"]]
    # The way back is taken once: the dashboard opened again stays the dashboard.
    page.goto(f"{site.url}/")
    opened.expect_state("connected")
    expect(page.get_by_test_id("apps")).to_be_visible()
    assert page.url == f"{site.url}/"


@needs_nginx
def test_open_redirects_in_rd_are_refused_and_the_apps_are_listed(
    open_page: PageOpener, site: Site
) -> None:
    opened = pair_through_nginx(open_page, site, f"{site.url}/")
    page = opened.page
    opened.expect_state("connected")
    link = page.get_by_test_id("app-link-0")
    expect(link).to_have_text("service")
    expect(link).to_have_attribute("href", f"{site.url}/svc/")
    port = site.nginx.https_port
    other_port = free_port()
    attempts = [
        "//evil.test/",
        "https://evil.test/",
        "/\\evil.test",
        "/%2F%2Fevil.test",
        "/%5Cevil.test",
        "javascript:alert(document.cookie)",
        f"https://127.0.0.1:{port}@evil.test/",
        f"https://evil.test#@127.0.0.1:{port}/",
        f"https://127.0.0.1:{other_port}/app/",
        f"http://127.0.0.1:{port}/app/",
        "data:text/html,hello",
    ]
    for attempt in attempts:
        dashboard = f"{site.url}/?rd={quote(attempt, safe='')}"
        page.goto(dashboard)
        opened.expect_state("connected")
        status = page.get_by_test_id("return-status")
        expect(status).to_have_attribute("data-tone", "error")
        expect(status).to_contain_text("not followed")
        assert page.url == dashboard, attempt
    # A target on the gateway's own origin is followed.
    page.goto(f"{site.url}/?rd={quote('/svc/here?x=1', safe='')}")
    page.wait_for_url(f"{site.url}/svc/here?x=1")
    assert echoed(page)["path"] == "/svc/here"


def test_the_dashboard_shows_presence_last_seen_and_address_of_the_device_in_use(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = open_page(gateway.url)  # direct loopback: local, approved as admin
    admin.expect_state("connected")
    self_id = admin.page.get_by_test_id("device-id").inner_text()
    expect(admin.page.get_by_test_id(f"device-seen-{self_id}")).to_have_text("connected now")
    remote = pair_remote_browser(open_page, gateway, remote_ip="203.0.113.70")
    remote_id = remote.page.get_by_test_id("device-id").inner_text()
    page = admin.page
    # Listed at once, before any last-seen write reached the store: never "never".
    expect(page.get_by_test_id(f"device-seen-{remote_id}")).to_have_text("online, just now")
    expect(page.get_by_test_id(f"device-online-{remote_id}")).to_have_attribute(
        "data-online", "true"
    )
    expect(page.get_by_test_id(f"device-ip-{remote_id}")).to_have_text("203.0.113.70")
    # Search and sort.
    search = page.get_by_test_id("device-search")
    search.fill("203.0.113.70")
    expect(page.get_by_test_id(f"device-{remote_id}")).to_be_visible()
    expect(page.get_by_test_id(f"device-{self_id}")).to_have_count(0)
    expect(page.get_by_test_id("device-count")).to_have_text("1 of 2")
    search.fill("no such device")
    expect(page.get_by_test_id("devices-empty")).to_be_visible()
    search.fill("")
    page.get_by_test_id("device-sort").select_option("address")
    ids = page.locator('[data-testid="device-list"] > li').evaluate_all(
        "items => items.map(item => item.dataset.deviceId)"
    )
    assert ids == [self_id, remote_id]  # 127.0.0.1 before 203.0.113.70
    # The store learns of it too, at the next flush (first sight is never throttled).
    deadline = time.monotonic() + 15
    while True:
        stored = {d["id"]: d for d in listing(gateway)["devices"]}[remote_id]
        if stored["lastSeenAt"] is not None:
            break
        assert time.monotonic() < deadline, "last seen never reached the store"
        time.sleep(0.5)
    assert stored["lastIp"] == "203.0.113.70"


def test_approving_a_browser_that_paired_again_replaces_its_older_twin(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    admin = open_page(gateway.url)
    admin.expect_state("connected")
    old = pair_remote_browser(open_page, gateway, remote_ip="203.0.113.90")
    old_id = old.page.get_by_test_id("device-id").inner_text()
    # The same machine, a new profile (new key), the same default name and address.
    again = open_page(gateway.url, remote_ip="203.0.113.90")
    again.expect_state("token-needed")
    ask_to_pair(again)
    again.expect_state("waiting")
    request_id = again.page.get_by_test_id("request-id").inner_text()
    page = admin.page
    replace_box = page.get_by_test_id(f"replace-{request_id}")
    expect(replace_box).to_be_checked()
    expect(replace_box).to_have_attribute("data-device-id", old_id)
    page.get_by_test_id(f"approve-user-{request_id}").click()
    again.expect_state("connected")
    new_id = again.page.get_by_test_id("device-id").inner_text()
    # The twin is revoked in the same write: its page is told so, and it leaves the list.
    old.expect_state("revoked")
    expect(page.get_by_test_id(f"device-{old_id}")).to_have_count(0)
    expect(page.get_by_test_id(f"device-{new_id}")).to_be_visible()
    paired = {d["id"]: d["status"] for d in listing(gateway, "--all")["devices"]}
    assert paired[old_id] == "revoked" and paired[new_id] == "paired"
