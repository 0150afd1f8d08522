"""Every dashboard response carries the anti-framing and anti-sniffing headers (issue 14, attack 4).

The attack: the CSP with ``frame-ancestors 'none'`` was only on ``/``, so
``/ui/index.html`` could be framed and a framed "Approve" click worked. The
real-browser half of this is ``tests/browser/test_browser_framing.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.gateway.dashboard import CONTENT_SECURITY_POLICY
from tests.conftest import LOOPBACK, REMOTE, client_for

UI_DIR = Path(__file__).resolve().parents[2] / "edge" / "ui"
DASHBOARD_PATHS = [
    "/",
    "/ui/index.html",
    "/ui/app.js",
    "/ui/admin.js",
    *(
        f"/ui/{path.name}"
        for path in sorted(UI_DIR.glob("*.js"))
        if path.name not in {"app.js", "admin.js"}
    ),
    "/ui/style.css",
    "/ui/favicon.svg",
    "/ui/no-such-file.js",
    "/ui/",
]


def _assert_dashboard_headers(headers: Any) -> None:
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    # set once, not once by the page and once by the wrapper
    assert len(headers.get_list("content-security-policy")) == 1
    assert len(headers.get_list("x-frame-options")) == 1


@pytest.mark.parametrize("path", DASHBOARD_PATHS)
@pytest.mark.parametrize("address", [REMOTE, LOOPBACK], ids=["remote", "local"])
def test_every_dashboard_response_carries_the_security_headers(
    app: Any, path: str, address: tuple[str, int]
) -> None:
    with client_for(app, address, "http://127.0.0.1:18789") as client:
        response = client.get(path)
    _assert_dashboard_headers(response.headers)


def test_a_missing_dashboard_file_is_still_a_404_with_the_headers(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        response = client.get("/ui/missing.html")
    assert response.status_code == 404
    _assert_dashboard_headers(response.headers)


def test_head_of_the_dashboard_page_carries_them_too(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        response = client.head("/ui/index.html")
    assert response.status_code == 200
    _assert_dashboard_headers(response.headers)


def test_the_page_itself_is_never_cached_and_still_served(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    assert "<title>Edge" in response.text
