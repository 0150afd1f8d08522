"""Clickjacking (issue 14, attack 4): a page on another origin cannot show the dashboard in a frame.

The attacker's page frames the dashboard and lures the operator into clicking
where "Approve" would be. Real Chromium is the judge of whether the framed
dashboard renders: ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'``
on every dashboard response make it refuse, ``/ui/index.html`` included.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.conftest import PageOpener
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

FRAMED_PATHS = ["/ui/index.html", "/"]
INNOCENT = b"<!doctype html><title>innocent</title><p id='innocent'>a page that may be framed</p>"


def _attacker_page(target: str) -> bytes:
    return (
        "<!doctype html><title>win a prize</title>"
        f"<iframe id='victim' src='{target}' width='800' height='600' "
        "onload='window.victimLoaded = true'></iframe>"
    ).encode()


@pytest.fixture
def attacker_site() -> Iterator[Callable[[str], str]]:
    """``site(target)``: the URL of a page on another origin that frames ``target``."""
    targets: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = INNOCENT if self.path == "/innocent" else _attacker_page(targets[self.path])
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://attacker.test:{server.server_address[1]}"

    def site(target: str) -> str:
        path = f"/frame{len(targets)}"
        targets[path] = target
        return base + path

    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def _framed(page: Any) -> Any:
    page.wait_for_function("window.victimLoaded === true")
    (child,) = [frame for frame in page.frames if frame != page.main_frame]
    return child


@pytest.mark.parametrize("path", FRAMED_PATHS)
def test_dashboard_framed_by_another_origin_does_not_render(
    open_page: PageOpener,
    edge_server_factory: Callable[..., EdgeServer],
    attacker_site: Callable[[str], str],
    path: str,
) -> None:
    gateway = edge_server_factory()
    attacker = open_page(attacker_site(gateway.url + path))
    child = _framed(attacker.page)
    assert child.query_selector("[data-testid='state']") is None
    assert child.query_selector(".brand-name") is None
    assert "Edge" not in (child.title() or "")


def test_a_frameable_page_does_render_in_the_same_setup(
    open_page: PageOpener, attacker_site: Callable[[str], str]
) -> None:
    """The check above can see a rendered frame: without the headers a page does show."""
    site = attacker_site("")  # reserve the base URL
    base = site.rsplit("/", 1)[0]
    attacker = open_page(attacker_site(base + "/innocent"))
    child = _framed(attacker.page)
    assert child.query_selector("#innocent") is not None
