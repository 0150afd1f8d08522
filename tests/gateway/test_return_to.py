"""Back to the page a refused browser wanted: ``rd`` kept through pairing, never an open redirect.

Forward-auth puts the page in the sign-in link (``/?rd=``); the dashboard page
keeps it in an HttpOnly cookie; ``GET /api/apps`` answers it, checked against
the gateway's own origin and the upstream hosts' origins, once paired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from edge import create_app
from edge.config import load_settings
from edge.gateway.return_to import (
    RETURN_COOKIE,
    allowed_origins,
    configured_apps,
    relative_target,
    return_target,
    sign_in_url,
)
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, base_config, client_for, open_ws

OWN = "https://edge.example.com"
SETTINGS = load_settings(
    {
        "upstreams": [
            {"host": "grafana.example.com", "url": "http://127.0.0.1:3000", "name": "grafana"},
            {"prefix": "/wiki/", "url": "http://127.0.0.1:3001", "share_control_origin": True},
        ]
    }
)
ALLOWED = allowed_origins(SETTINGS, OWN)

OPEN_REDIRECTS = [
    "//evil.com",
    "//evil.com/app/",
    "///evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "https://evil.com",
    "https://evil.com/",
    "http://evil.com/app/",
    "HTTPS://EVIL.COM/",
    "javascript:alert(1)",
    "JavaScript:alert(document.cookie)",
    "java\tscript:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "https:evil.com",
    "https:/evil.com",
    "https:\\\\evil.com",
    "https://edge.example.com@evil.com/",
    "https://edge.example.com:443@evil.com/",
    "https://user:pass@edge.example.com/",
    "https://evil.com#@edge.example.com/",
    "https://evil.com?@edge.example.com/",
    "https://evil.com\\@edge.example.com/",
    "https://edge.example.com.evil.com/",
    "https://evil.com/https://edge.example.com/",
    "/%2F%2Fevil.com",
    "/%2f%2fevil.com",
    "/%5Cevil.com",
    "/%5cevil.com",
    "/%252F%252Fevil.com",
    "%2F%2Fevil.com",
    "/app/%0d%0aSet-Cookie:x=1",
    "/app/\r\nSet-Cookie: x=1",
    "/app/\x00",
    "https://edge.example.com:8443/",
    "https://edge.example.com:444/app/",
    "http://edge.example.com/",
    "https://grafana.example.com:3000/",
    "http://grafana.example.com/",
    "https://other.example.com/",
    "https://grafana.example.com%2F@evil.com/",
    "https://%65vil.com/",
    "https://edge.example.com%40evil.com/",
    "ftp://edge.example.com/",
    "",
    "/" + "a" * 3000,
]


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
def test_an_open_redirect_is_refused(target: str) -> None:
    assert return_target(target, own=OWN, allowed=ALLOWED) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/app/report?id=7", "https://edge.example.com/app/report?id=7"),
        ("/wiki/Page%20One", "https://edge.example.com/wiki/Page%20One"),
        ("/", "https://edge.example.com/"),
        ("https://edge.example.com/app/", "https://edge.example.com/app/"),
        ("https://EDGE.example.com:443/app/", "https://edge.example.com/app/"),
        ("https://grafana.example.com/d/abc?x=1", "https://grafana.example.com/d/abc?x=1"),
        ("https://grafana.example.com", "https://grafana.example.com/"),
    ],
)
def test_a_page_of_the_gateway_or_of_an_upstream_host_is_kept(target: str, expected: str) -> None:
    assert return_target(target, own=OWN, allowed=ALLOWED) == expected


def test_upstream_hosts_are_allowed_on_the_port_the_gateway_was_reached_on() -> None:
    own = "https://edge.example.com:8443"
    allowed = allowed_origins(SETTINGS, own)
    assert allowed == frozenset({own, "https://grafana.example.com:8443"})
    assert return_target("https://grafana.example.com:8443/x", own=own, allowed=allowed) == (
        "https://grafana.example.com:8443/x"
    )
    assert return_target("https://grafana.example.com/x", own=own, allowed=allowed) is None


def test_the_sign_in_link_carries_the_original_path_and_query_encoded_once() -> None:
    assert sign_in_url(OWN, "/app/a%20b?x=1&y=2") == (
        "https://edge.example.com/?rd=%2Fapp%2Fa%2520b%3Fx%3D1%26y%3D2"
    )
    assert relative_target("/app/a b") is None  # no request line carries a raw space
    assert sign_in_url(OWN, "/app/report?id=7") == (
        "https://edge.example.com/?rd=%2Fapp%2Freport%3Fid%3D7"
    )
    # Nothing to keep, or nothing safe to keep: the plain dashboard.
    for original in (None, "/", "//evil.com/x", "/\\evil.com", "https://evil.com/"):
        assert sign_in_url(OWN, original) == "https://edge.example.com/"
    assert sign_in_url(None, "/app/") == "/?rd=%2Fapp%2F"


def test_apps_are_the_upstreams_as_links() -> None:
    apps = configured_apps(SETTINGS, "https://edge.example.com:8443")
    assert [(a.name, a.url) for a in apps] == [
        ("grafana", "https://grafana.example.com:8443/"),
        ("wiki", "https://edge.example.com:8443/wiki/"),
    ]


# -- through the app ------------------------------------------------------------------------


PROXY = ("127.0.0.1", 50000)
CLIENT_IP = "198.51.100.23"


def _proxied(**extra: str) -> dict[str, str]:
    return {
        "x-forwarded-for": CLIENT_IP,
        "x-forwarded-proto": "https",
        "x-forwarded-host": "edge.example.com",
        **extra,
    }


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return create_app(
        base_config(
            tmp_path,
            proxy={"trusted_proxies": ["127.0.0.1"]},
            upstreams=[
                {"host": "grafana.example.com", "url": "http://127.0.0.1:9", "name": "grafana"}
            ],
        )
    )


def _pair(app: Any, device: Device) -> str:
    with client_for(app, REMOTE) as client:
        with open_ws(client) as ws:
            reply = device.handshake(ws, {"token": GATEWAY_TOKEN})
        app.state.gateway.service.approve(reply["requestId"], actor="test")
        with open_ws(client) as ws:
            hello = device.handshake(ws, {"token": GATEWAY_TOKEN})
    return str(hello["deviceToken"])


@pytest.mark.parametrize("endpoint", ["/auth/nginx", "/auth/caddy"])
def test_forward_auth_sends_a_browser_to_the_dashboard_with_the_page_it_wanted(
    app: Any, endpoint: str
) -> None:
    original = {"x-original-uri": "/app/report?id=7", "x-forwarded-uri": "/app/report?id=7"}
    with client_for(app, PROXY) as client:
        response = client.get(
            endpoint,
            headers=_proxied(accept="text/html", **original),
            follow_redirects=False,
        )
    assert response.status_code in (302, 401)
    assert response.headers["location"] == "https://edge.example.com/?rd=%2Fapp%2Freport%3Fid%3D7"


def test_forward_auth_keeps_no_protocol_relative_original_uri(app: Any) -> None:
    with client_for(app, PROXY) as client:
        response = client.get(
            "/auth/nginx",
            headers=_proxied(accept="text/html", **{"x-original-uri": "//evil.com/x"}),
        )
    assert response.headers["location"] == "https://edge.example.com/"


def test_the_page_keeps_rd_in_an_http_only_cookie_that_api_apps_answers_once(app: Any) -> None:
    token = _pair(app, Device("laptop"))
    with client_for(app, PROXY, base_url="https://edge.example.com") as client:
        page = client.get("/?rd=" + quote("/app/report?id=7", safe=""), headers=_proxied())
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{RETURN_COOKIE}=%2Fapp%2Freport%3Fid%3D7;")
        for flag in ("HttpOnly", "Path=/api/apps", "SameSite=Strict", "Secure", "Max-Age=900"):
            assert flag in cookie
        anonymous = client.get("/api/apps", headers=_proxied())
        assert anonymous.status_code == 401
        bearer = {"authorization": f"Bearer {token}"}
        answer = client.get("/api/apps", headers=_proxied(**bearer))
        assert answer.status_code == 200
        assert answer.json() == {
            "apps": [{"name": "grafana", "url": "https://grafana.example.com/"}],
            "returnTo": "https://edge.example.com/app/report?id=7",
            "returnRefused": False,
        }
        assert "Max-Age=0" in answer.headers["set-cookie"]  # followed once
        again = client.get("/api/apps", headers=_proxied(**bearer)).json()
        assert again["returnTo"] is None and again["returnRefused"] is False


@pytest.mark.parametrize(
    "target", ["//evil.com", "https://evil.com/", "/\\evil.com", "javascript:alert(1)"]
)
def test_api_apps_refuses_an_rd_off_the_gateway(app: Any, target: str) -> None:
    token = _pair(app, Device("laptop"))
    with client_for(app, PROXY, base_url="https://edge.example.com") as client:
        client.get("/?rd=" + quote(target, safe=""), headers=_proxied())
        answer = client.get("/api/apps", headers=_proxied(authorization=f"Bearer {token}"))
    assert answer.json()["returnTo"] is None
    assert answer.json()["returnRefused"] is True


def test_opening_the_dashboard_without_rd_drops_an_earlier_target(app: Any) -> None:
    with client_for(app, LOOPBACK, base_url="http://localhost") as client:
        client.get("/?rd=%2Fapp%2F")
        plain = client.get("/")
        assert "Max-Age=0" in plain.headers["set-cookie"]
        answer = client.get("/api/apps").json()
    assert answer["returnTo"] is None
