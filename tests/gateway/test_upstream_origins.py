"""Origin isolation: upstreams on hosts of their own; one on the control origin is fenced in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from edge import create_app
from edge.config import ConfigError, load_settings
from tests.conftest import REMOTE, Device, base_config
from tests.gateway.test_upstream_forwarding import pair
from tests.integration.proxies import UvicornThread, header_values, upstream_app

APP_HOST = "grafana.example.com"


@pytest.fixture(scope="module")
def upstream() -> Iterator[UvicornThread]:
    with UvicornThread(upstream_app) as server:
        yield server


def make_app(tmp_path: Path, upstream: UvicornThread, **shared: Any) -> Any:
    return create_app(
        base_config(
            tmp_path,
            upstreams=[
                {"host": APP_HOST, "url": upstream.url},
                {"prefix": "/shared/", "url": upstream.url, "share_control_origin": True, **shared},
            ],
        )
    )


def on_host(app: Any, host: str) -> TestClient:
    return TestClient(app, client=REMOTE, base_url=f"http://{host}")


def test_a_path_prefix_upstream_on_the_control_origin_is_refused_without_consent() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"upstreams": [{"prefix": "/app/", "url": "http://127.0.0.1:1"}]})
    message = str(info.value)
    assert "upstreams[0]: share_control_origin:" in message
    assert "upstreams[].host" in message  # says what to do instead


def test_share_control_origin_is_refused_with_a_host_of_its_own() -> None:
    with pytest.raises(ConfigError, match="share_control_origin"):
        load_settings(
            {"upstreams": [{"host": APP_HOST, "url": "http://127.0.0.1:1", "share_control_origin": True}]}
        )


@pytest.mark.parametrize("name", ["edge_session", "__Host-edge_session", "__Secure-edge_session"])
def test_an_upstream_on_the_control_origin_cannot_set_edges_cookie(
    tmp_path: Path, upstream: UvicornThread, name: str
) -> None:
    app = make_app(tmp_path, upstream)
    token = pair(app, Device())
    with on_host(app, "edge.example.com") as client:
        response = client.get(
            f"/shared/x?set_cookie_named={name}&set_cookie=kept",
            headers={"authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    assert not [c for c in cookies if c.startswith(name + "=")]
    assert [c for c in cookies if c.startswith("app_cookie=kept")]
    assert response.headers.get_list("content-security-policy") == ["sandbox"]


def test_the_sandbox_can_be_opted_out_of_per_upstream(tmp_path: Path, upstream: UvicornThread) -> None:
    app = make_app(tmp_path, upstream, sandbox=False)
    token = pair(app, Device())
    with on_host(app, "edge.example.com") as client:
        response = client.get(
            "/shared/x?set_cookie_named=edge_session", headers={"authorization": f"Bearer {token}"}
        )
    assert "content-security-policy" not in response.headers
    assert not [c for c in response.headers.get_list("set-cookie") if c.startswith("edge_session=")]


def test_an_upstream_host_gets_every_path_and_none_of_edges_routes(
    tmp_path: Path, upstream: UvicornThread
) -> None:
    app = make_app(tmp_path, upstream)
    token = pair(app, Device("grafana user"))
    with on_host(app, APP_HOST) as client:
        for path in ("/", "/ui/app.js", "/api/whoami", "/auth/nginx", "/healthz"):
            assert client.get(path).status_code == 401, path  # nothing is public on an app's host
        echo = client.get("/api/whoami", headers={"authorization": f"Bearer {token}"}).json()
        upstream_set = client.get(
            "/x?set_cookie_named=edge_session", headers={"authorization": f"Bearer {token}"}
        )
    assert echo["path"] == "/api/whoami"  # the app's own path, not Edge's endpoint
    assert header_values(echo, "remote-name") == ["grafana user"]
    assert header_values(echo, "authorization") == []
    # its own origin: not sandboxed, and its cookies are its own host's
    assert "content-security-policy" not in upstream_set.headers
    with on_host(app, "edge.example.com") as client:
        whoami = client.get("/api/whoami").json()
    assert whoami["auth"]["state"] == "anonymous"  # Edge's own host still serves Edge


@pytest.mark.parametrize("name", ["edge_session", "__Host-edge_session", "__Secure-edge_session"])
def test_an_upstream_on_a_host_of_its_own_cannot_set_edges_cookie_either(
    tmp_path: Path, upstream: UvicornThread, name: str
) -> None:
    """With ``Domain=`` of a parent both share, an app could toss a session onto Edge's host."""
    app = make_app(tmp_path, upstream)
    token = pair(app, Device("grafana user"))
    with on_host(app, APP_HOST) as client:
        response = client.get(
            f"/x?set_cookie_named={name}&set_cookie=kept",
            headers={"authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    assert not [c for c in cookies if c.startswith(name + "=")]
    assert [c for c in cookies if c.startswith("app_cookie=kept")]  # its own cookies pass
