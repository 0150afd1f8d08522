"""Arbitrary bytes in every header the gateway reads never produce a 500 or an exception.

The requests go through the whole ASGI app (resolution, guard, routes) on the
TestClient's event loop, as raw ASGI scopes: header values no HTTP client
would send (NUL, CR/LF, invalid UTF-8, unbalanced quotes) arrive as they are.
``ServerErrorMiddleware`` re-raises whatever it turned into a 500, so an
unhandled exception fails the example as well as the status does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from edge import create_app
from tests.conftest import base_config

METRICS_TOKEN = "metrics-bearer-token-0123456789"
HEADER_NAMES = (
    b"x-forwarded-for",
    b"forwarded",
    b"host",
    b"origin",
    b"authorization",
    b"cookie",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"x-real-ip",
)
# Pieces of real header syntax, so generated values often get deep into the parsers.
FRAGMENTS = (
    b"for=",
    b"by=",
    b"proto=https",
    b"host=",
    b'"',
    b"[",
    b"]",
    b":",
    b",",
    b";",
    b" ",
    b"=",
    b"\\",
    b"unknown",
    b"_hidden",
    b"127.0.0.1",
    b"10.0.0.7",
    b"::1",
    b"::ffff:10.0.0.7",
    b"2001:db8::1",
    b"203.0.113.5:8080",
    b"0127.0.0.1",
    b"localhost",
    b"attacker.example",
    b"http://",
    b"https://",
    b"null",
    b"Bearer ",
    b"bearer",
    b"edge_session=",
    b"\xff\xfe",
    b"\x00",
    b"\r\n",
    b"\t",
    b"%",
    b"65536",
    b"x" * 300,
)
PEERS = (
    ("127.0.0.1", 50000),
    ("10.0.0.7", 40000),
    ("::1", 50001),
    ("::ffff:10.0.0.7", 40001),
    ("203.0.113.9", 5555),
    ("192.168.1.20", 6000),
)
PATHS = (
    "/",
    "/api/whoami",
    "/api/devices",
    "/api/session",
    "/api/requests/ABCD-EFGH/approve",
    "/healthz",
    "/readyz",
    "/metrics",
    "/auth/nginx",
    "/auth/caddy",
    "/ui/app.js",
    "/nowhere",
)

header_values = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(b"".join),
)
header_lists = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=8)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One gateway for every example: trusted proxies, a local network, a metrics token."""
    config = base_config(
        Path(tmp_path_factory.mktemp("fuzz-headers")),
        proxy={
            "trusted_proxies": ["10.0.0.0/8", "127.0.0.1", "::1"],
            "client_ip_headers": ["forwarded", "x-forwarded-for", "x-real-ip"],
        },
        local={"networks": ["192.168.0.0/16"], "hosts": ["edge.lan"]},
        metrics={"bearer_token": METRICS_TOKEN},
        logging={"level": "warning"},
    )
    with TestClient(create_app(config)) as test_client:
        yield test_client


async def _http(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], peer: Any
) -> int:
    """One request as a server would run it; the answer's status."""
    statuses: list[int] = []
    requested = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # like a real client: gone only once the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": peer,
        "server": ("127.0.0.1", 18789),
    }
    await app(scope, receive, send)
    assert statuses, "the app answered nothing"
    return statuses[0]


async def _websocket(
    app: Any, headers: list[tuple[bytes, bytes]], peer: Any
) -> list[dict[str, Any]]:
    """A /ws handshake that the client abandons at once; returns what the server sent."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1001}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1001}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": peer,
        "server": ("127.0.0.1", 18789),
        "subprotocols": [],
    }
    await app(scope, receive, send)
    return sent


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    method=st.sampled_from(["GET", "POST", "HEAD", "DELETE"]),
    path=st.sampled_from(PATHS),
    headers=header_lists,
    peer=st.one_of(st.sampled_from(PEERS), st.none()),
)
def test_arbitrary_header_bytes_never_produce_a_server_error(
    client: TestClient, method: str, path: str, headers: list[tuple[bytes, bytes]], peer: Any
) -> None:
    status = client.portal.call(_http, client.app, method, path, headers, peer)  # type: ignore[union-attr]
    assert status < 500


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=header_lists, peer=st.one_of(st.sampled_from(PEERS), st.none()))
def test_arbitrary_header_bytes_on_the_control_socket_end_in_a_contract_close_or_a_challenge(
    client: TestClient, headers: list[tuple[bytes, bytes]], peer: Any
) -> None:
    sent = client.portal.call(_websocket, client.app, headers, peer)  # type: ignore[union-attr]
    assert sent[0]["type"] == "websocket.accept"
    for message in sent[1:]:
        if message["type"] == "websocket.close":
            assert message["code"] == 1008
            assert message["reason"] in (
                "origin not allowed",
                "unauthorized: too many failed attempts",
            )
        else:
            assert message["type"] == "websocket.send" and '"challenge"' in message["text"]


@pytest.mark.parametrize(
    "name",
    [b"x-forwarded-for", b"forwarded", b"host", b"origin", b"authorization", b"cookie"],
)
def test_a_megabyte_header_is_answered_like_any_other(client: TestClient, name: bytes) -> None:
    value = (b"1.2.3.4, " * 120_000)[: 1 << 20]
    for path in ("/api/whoami", "/api/devices"):
        status = client.portal.call(  # type: ignore[union-attr]
            _http, client.app, "GET", path, [(name, value)], ("10.0.0.7", 1)
        )
        assert status in (200, 401)
