"""Where the session cookie meets forward-auth, apps on the control origin and cookie tossing.

A cookie-authenticated write must come from the gateway's own origin wherever
the cookie is honoured: Edge's API, an app the operator put on the control
origin, and a forward-auth answer about the visitor's request. Only the one
cookie name the gateway sets for the scheme authenticates, from a
unambiguous cookie, and a cookie a sibling host tossed in never locks the
browser out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from edge import create_app
from edge.gateway.forwarding.headers import sets_edge_cookie
from tests.conftest import REMOTE, Device, base_config, client_for
from tests.gateway.test_http import pair_remote
from tests.integration.proxies import UvicornThread, upstream_app

EVIL = {
    "origin": "http://wiki.edge.example.com",
    "sec-fetch-site": "same-site",
    "content-type": "application/x-www-form-urlencoded",
}
OWN = {"origin": "http://edge.example.com", "sec-fetch-site": "same-origin"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[UvicornThread]:
    with UvicornThread(upstream_app) as server:
        yield server


@pytest.fixture
def shared_app(tmp_path: Path, upstream: UvicornThread) -> Any:
    return create_app(
        base_config(
            tmp_path,
            upstreams=[{"prefix": "/app/", "url": upstream.url, "share_control_origin": True}],
        )
    )


def _session(client: TestClient, token: str) -> None:
    response = client.post("/api/session", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("endpoint", "method_header"),
    [("/auth/nginx", "x-original-method"), ("/auth/caddy", "x-forwarded-method")],
)
def test_forward_auth_refuses_a_cross_site_write_on_the_admins_cookie(
    shared_app: Any, endpoint: str, method_header: str
) -> None:
    token = pair_remote(shared_app, Device("victim"), "admin")
    with client_for(shared_app, REMOTE) as client:
        _session(client, token)
        refused = client.get(endpoint, headers={**EVIL, method_header: "POST"})
        assert refused.status_code == 403
        assert refused.json()["reason"] == "cross_site_write"
        assert "remote-user" not in refused.headers
        # The same write from the gateway's own origin, and any cross-site read, pass.
        assert client.get(endpoint, headers={**OWN, method_header: "POST"}).status_code == 200
        assert client.get(endpoint, headers={**EVIL, method_header: "GET"}).status_code == 200


def test_forward_auth_refuses_a_cross_site_websocket_on_the_admins_cookie(shared_app: Any) -> None:
    token = pair_remote(shared_app, Device("victim"), "admin")
    upgrade = {"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "x-original-method": "GET"}
    with client_for(shared_app, REMOTE) as client:
        _session(client, token)
        hijack = client.get("/auth/nginx", headers={**upgrade, "origin": EVIL["origin"]})
        assert hijack.status_code == 403 and hijack.json()["reason"] == "cross_site_write"
        own = client.get("/auth/nginx", headers={**upgrade, **OWN})
    assert own.status_code == 200


def test_forward_auth_leaves_bearer_writes_alone(shared_app: Any) -> None:
    token = pair_remote(shared_app, Device("script"), "admin")
    with client_for(shared_app, REMOTE) as client:
        answer = client.get(
            "/auth/nginx",
            headers={**EVIL, "x-original-method": "POST", "authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 200  # a page of another site cannot set Authorization


def test_an_app_on_the_control_origin_gets_no_cross_site_write_on_the_cookie(
    shared_app: Any,
) -> None:
    token = pair_remote(shared_app, Device("victim"), "admin")
    with client_for(shared_app, REMOTE) as client:
        _session(client, token)
        refused = client.post("/app/delete", content=b"a=1", headers=EVIL)
        assert refused.status_code == 403 and refused.json()["reason"] == "cross_site_write"
        # The app's own forms (any body type) still work from its own origin.
        own = client.post(
            "/app/delete",
            content=b"a=1",
            headers={**OWN, "content-type": "application/x-www-form-urlencoded"},
        )
    assert own.status_code == 200 and own.json()["body"] == "a=1"


def _whoami_device(client: TestClient, cookie: str) -> str | None:
    device = client.get("/api/whoami", headers={"cookie": cookie}).json()["auth"]["device"]
    return None if device is None else str(device["id"])


def test_only_the_schemes_cookie_name_authenticates(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path))
    victim, attacker = Device("victim"), Device("attacker")
    victim_token, attacker_token = pair_remote(app, victim), pair_remote(app, attacker)
    with TestClient(app, client=REMOTE, base_url="https://edge.example.com") as client:
        assert _whoami_device(client, f"__Host-edge_session={victim_token}") == victim.id
        # Names a sibling host or a plain-http page could set are not believed under https.
        tossed = f"edge_session={attacker_token}; __Host-edge_session={victim_token}"
        assert _whoami_device(client, tossed) == victim.id
        assert _whoami_device(client, f"__Secure-edge_session={attacker_token}") is None
        # One hidden behind a comma in another cookie beside the victim's: neither is believed.
        smuggled = f"foo=x,__Host-edge_session={attacker_token}; __Host-edge_session={victim_token}"
        assert _whoami_device(client, smuggled) is None
    with client_for(app, REMOTE) as client:
        assert _whoami_device(client, f"edge_session={victim_token}") == victim.id
        # The name twice (one tossed in with Domain=): neither is believed.
        twice = f"edge_session={attacker_token}; edge_session={victim_token}"
        assert _whoami_device(client, twice) is None


def test_a_tossed_cookie_never_locks_the_browser_out(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path))
    token = pair_remote(app, Device("victim"), "admin")
    with client_for(app, REMOTE) as client:
        for _ in range(15):
            client.get("/api/whoami", headers={"cookie": "edge_session=garbage"})
        answer = client.get("/api/devices", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "value",
    [
        b"edge_session=T; Path=/",
        b"foo=x,edge_session=T; Path=/",
        b"foo=x, __Host-edge_session=T; Path=/; Secure",
    ],
)
def test_a_set_cookie_naming_edges_cookie_anywhere_is_caught(value: bytes) -> None:
    assert sets_edge_cookie(value)


def test_an_ordinary_set_cookie_is_not_edges() -> None:
    assert not sets_edge_cookie(b"theme=dark; Path=/; Expires=Wed, 09 Jun 2027 10:18:14 GMT")
