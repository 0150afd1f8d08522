"""Chromium, driven by Playwright, against a real ``edge serve`` on loopback.

A "remote" browser is one whose requests (the WebSocket handshake included)
carry ``X-Forwarded-For`` while the gateway trusts 127.0.0.1 as its proxy:
exactly what a visitor behind nginx on the same host looks like. A browser
without the header is a direct loopback client, which the gateway treats as
local and approves as admin.

Chromium resolves ``*.test`` to 127.0.0.1 and every other name to nothing,
so pages can have foreign-looking origins while no packet leaves loopback.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import EdgeServer, edge_server_factory  # noqa: F401  (fixture)

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="pip install playwright (a test extra)"
)

pytestmark = pytest.mark.integration

# Generous waits: the suite shares the machine with real servers; these bound waiting, they assert no speed.
sync_api.expect.set_options(timeout=15_000)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP *.test 127.0.0.1, EXCLUDE localhost, EXCLUDE 127.0.0.1, MAP * ~NOTFOUND",
]


def chromium_path() -> str | None:
    for candidate in ("chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module: a live sync Playwright keeps an event loop
    running in this thread, which would break later tests that call asyncio.run."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def gateway(edge_server_factory: Callable[..., EdgeServer]) -> EdgeServer:  # noqa: F811
    """``edge serve`` behind a "proxy" on loopback: 127.0.0.1 is trusted to forward."""
    return edge_server_factory({"proxy": {"trusted_proxies": ["127.0.0.1"]}})


@dataclass
class OpenedPage:
    """A page in its own browser context (own storage, own IndexedDB), and what it did."""

    page: Any
    socket_urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def state(self) -> Any:
        return self.page.get_by_test_id("state")

    def expect_state(self, state: str, timeout: float = 20_000) -> None:
        sync_api.expect(self.state()).to_have_attribute("data-state", state, timeout=timeout)

    def shoot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def storage(self, key: str) -> str | None:
        value = self.page.evaluate("key => window.localStorage.getItem(key)", key)
        return None if value is None else str(value)


PageOpener = Callable[..., OpenedPage]


@pytest.fixture
def open_page(browser: Any) -> Iterator[PageOpener]:
    """``open_page(url, remote_ip=None, **context_options)``: a fresh browser profile on ``url``.

    Uncaught script errors fail the test at teardown: a page that throws has a
    state it does not show.
    """
    contexts: list[Any] = []
    opened: list[OpenedPage] = []

    def opener(url: str, *, remote_ip: str | None = None, **options: Any) -> OpenedPage:
        headers = {"X-Forwarded-For": remote_ip} if remote_ip else {}
        context = browser.new_context(extra_http_headers=headers, **options)
        contexts.append(context)
        page = context.new_page()
        result = OpenedPage(page)
        page.on("websocket", lambda socket: result.socket_urls.append(socket.url))
        page.on("pageerror", lambda error: result.errors.append(str(error)))
        opened.append(result)
        page.goto(url)
        return result

    yield opener
    for context in contexts:
        context.close()
    errors = [error for page in opened for error in page.errors]
    assert errors == [], f"uncaught errors in the Control UI: {errors}"


@contextlib.contextmanager
def static_page(body: bytes) -> Iterator[int]:
    """A web server on 127.0.0.1 that answers every GET with ``body`` (HTML); yields its port.

    The page of another origin the browser tests attack from: a sibling site,
    a dev server on another port.
    """

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
