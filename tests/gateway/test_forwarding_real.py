"""Forwarding through a real server: Edge under uvicorn on loopback, the echo upstream behind it.

Requests go out byte for byte (``http.client``, raw sockets), so dot segments,
encoded slashes and odd header spellings reach Edge as an attacker sends
them; no client library tidies them first.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from edge import create_app
from edge.cli.serve import UVICORN_SETTINGS
from edge.gateway.forwarding.headers import canonical, is_reserved
from tests.conftest import Device, base_config
from tests.gateway.test_forwarding_policy import FAMILIES, spellings
from tests.integration.conftest import free_port, wait_for_port
from tests.integration.proxies import UvicornThread, header_values, upstream_app, ws_handshake

EDGE_SET = {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
EDGE_IDENTITY = {
    b"remote-user",
    b"remote-name",
    b"remote-groups",
    b"x-edge-auth",
    b"x-edge-role",
    b"x-edge-device-id",
}


class EdgeThread:
    """Edge's app under uvicorn in a thread, lifespan on (its gateway starts and stops)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", **UVICORN_SETTINGS  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> EdgeThread:
        self.thread.start()
        wait_for_port(self.port, "127.0.0.1")
        # A loopback client is local and approved as it connects: its device token
        # lets requests carrying proxy headers (never local) through as paired.
        self.device = Device("prop tester")
        with connect(f"ws://127.0.0.1:{self.port}/ws", open_timeout=30, proxy=None) as ws:
            hello = ws_handshake(ws, self.device, {})
        self.token = str(hello["deviceToken"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UvicornThread]:
    with UvicornThread(upstream_app) as server:
        yield server


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, upstream: UvicornThread) -> Iterator[EdgeThread]:
    tmp: Path = tmp_path_factory.mktemp("edge")
    app = create_app(
        base_config(
            tmp,
            upstreams=[
                {
                    "prefix": "/svc/",
                    "share_control_origin": True,
                    "url": f"{upstream.url}/base",
                    "websocket": True,
                },
            ],
        )
    )
    with EdgeThread(app) as server:
        yield server


def raw_get(edge: EdgeThread, target: str, headers: list[tuple[str, str]] = ()) -> tuple[int, Any]:  # type: ignore[assignment]
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"localhost:{edge.port}")
        conn.putheader("Authorization", f"Bearer {edge.token}")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        conn.close()


@pytest.mark.parametrize(
    "target",
    ["/svc/x/../../admin/", "/svc/%2e%2e/admin", "/svc/x/%2E%2e/%2e%2E/admin", "/svc/..%2fadmin", "/svc/a%2Fb"],
)
def test_a_path_that_leaves_the_prefix_or_hides_a_slash_is_refused(edge: EdgeThread, target: str) -> None:
    status, body = raw_get(edge, target)
    assert status == 400
    assert body["reason"] == "path_refused"


@pytest.mark.parametrize("target", ["/svc/a%5cb", "/svc/%5C..%5Cadmin"])
def test_an_encoded_backslash_is_refused(edge: EdgeThread, target: str) -> None:
    status, body = raw_get(edge, target)
    assert (status, body["reason"]) == (400, "path_refused")


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/svc/a/../b?q=1", "/base/svc/b"),
        ("/svc/a/%2e%2e/b", "/base/svc/b"),
        ("/svc/./a/./b/", "/base/svc/a/b/"),
    ],
)
def test_the_normalised_path_is_what_the_upstream_receives(
    edge: EdgeThread, target: str, forwarded: str
) -> None:
    status, echo = raw_get(edge, target)
    assert status == 200
    assert echo["raw_path"] == forwarded


def test_a_websocket_path_is_normalised_and_refused_alike(edge: EdgeThread) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{edge.port}/svc/x/../../ws", open_timeout=30, proxy=None)
    assert info.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{edge.port}/svc/..%2flive", open_timeout=30, proxy=None)
    assert info.value.response.status_code == 400
    with connect(f"ws://127.0.0.1:{edge.port}/svc/a/../live", open_timeout=30, proxy=None) as ws:
        ws.send("still under the prefix")
        assert ws.recv(timeout=5) == "still under the prefix"


def test_underscore_and_foreign_identity_headers_never_reach_the_upstream(edge: EdgeThread) -> None:
    forged = [
        ("Remote_User", "forged-admin"),
        ("Remote_Email", "root@example.com"),
        ("X_Edge_Role", "forged-admin"),
        ("X-Forwarded-User", "forged-admin"),
        ("X-Auth-Request-Email", "root@example.com"),
        ("X_Forwarded_For", "203.0.113.9"),
        ("X-Forwarded-Prefix", "/evil"),
    ]
    status, echo = raw_get(edge, "/svc/echo", forged)
    assert status == 200
    values = [value for _, value in echo["headers"]]
    assert "forged-admin" not in values and "root@example.com" not in values
    assert "203.0.113.9" not in values and "/evil" not in values
    # local (no proxy header was sent) or paired by the bearer token: Edge's word either way
    assert header_values(echo, "remote-user") in (["local"], [edge.device.id])


def test_comma_joined_session_cookie_is_not_forwarded(edge: EdgeThread) -> None:
    status, echo = raw_get(edge, "/svc/echo", [("Cookie", "theme=dark, edge_session=not-for-the-app; lang=en")])
    assert status == 200
    assert header_values(echo, "cookie") == ["lang=en"]


# -- property: the real forwarding --------------------------------------------------------

SEGMENTS = st.lists(st.sampled_from(["a", "svc", ".", "..", "%2e%2e", "%2E", "b"]), max_size=6)
HEADERS = st.lists(
    st.tuples(
        st.sampled_from(FAMILIES).flatmap(lambda f: st.sampled_from(spellings(f))),
        st.from_regex(r"[a-z0-9=;,. ]{1,12}", fullmatch=True),
    ),
    max_size=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=SEGMENTS, headers=HEADERS)
def test_what_the_upstream_receives_stays_under_its_base_and_carries_only_edges_identity(
    edge: EdgeThread, segments: list[str], headers: list[tuple[str, str]]
) -> None:
    target = "/svc/" + "/".join(segments)
    status, echo = raw_get(edge, target, headers)
    if status == 400:
        assert echo["reason"] == "path_refused"
        return
    if status == 308:  # "/svc" without its slash is redirected, not forwarded
        return
    assert status == 200, (target, echo)
    assert echo["raw_path"].startswith("/base/svc/")
    assert ".." not in echo["raw_path"].split("/")
    for name, value in echo["headers"]:
        key = name.lower().encode()
        if is_reserved(key):
            assert key in EDGE_SET | EDGE_IDENTITY, (name, value)
            assert canonical(key) == key  # Edge's own spelling only
    for name in EDGE_SET | EDGE_IDENTITY:
        assert len(header_values(echo, name.decode())) <= 1
    assert header_values(echo, "x-forwarded-for") == ["127.0.0.1"]
