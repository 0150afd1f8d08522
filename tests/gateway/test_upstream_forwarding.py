"""Upstream forwarding in process: the gateway app under the test client, a real upstream on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from edge import create_app
from edge.config import UpstreamSettings
from edge.gateway.context import AUTH_KEY, LOCAL, RESOLUTION_KEY
from edge.gateway.forwarding.headers import end_to_end, forwarding_headers
from edge.gateway.forwarding.http import upstream_session
from edge.gateway.upstream import UpstreamRoute
from edge.net import Resolution
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, base_config, client_for, open_ws
from tests.integration.conftest import free_port
from tests.integration.proxies import UvicornThread, header_values, upstream_app

PROXY = ("127.0.0.1", 50000)
CLIENT_IP = "198.51.100.23"


@pytest.fixture(scope="module")
def upstream() -> Iterator[UvicornThread]:
    with UvicornThread(upstream_app) as server:
        yield server


@pytest.fixture
def app(tmp_path: Path, upstream: UvicornThread) -> Any:
    return create_app(
        base_config(
            tmp_path,
            proxy={"trusted_proxies": ["127.0.0.1"]},
            upstreams=[
                {"prefix": "/svc/", "share_control_origin": True, "url": upstream.url, "websocket": True},
                {
                    "prefix": "/strip/",
                    "share_control_origin": True,
                    "url": f"{upstream.url}/base",
                    "strip_prefix": True,
                    "name": "stripped",
                },
                {"prefix": "/slow/", "share_control_origin": True, "url": upstream.url, "timeout": 0.3, "websocket": True},
                {
                    "prefix": "/down/",
                    "share_control_origin": True,
                    "url": f"http://127.0.0.1:{free_port()}",
                    "connect_timeout": 1,
                    "websocket": True,
                },
                {"prefix": "/nows/", "share_control_origin": True, "url": upstream.url},
            ],
        )
    )


def pair(app: Any, device: Device) -> str:
    with client_for(app, REMOTE) as client:
        with open_ws(client) as ws:
            reply = device.handshake(ws, {"token": GATEWAY_TOKEN})
        app.state.gateway.service.approve(reply["requestId"], actor="test")
        with open_ws(client) as ws:
            hello = device.handshake(ws, {"token": GATEWAY_TOKEN})
    return str(hello["deviceToken"])


def via_proxy(app: Any) -> TestClient:
    return TestClient(app, client=PROXY, base_url="http://127.0.0.1:18789")


def proxied(token: str | None = None, **extra: str) -> dict[str, str]:
    headers = {
        "x-forwarded-for": CLIENT_IP,
        "x-forwarded-proto": "https",
        "x-forwarded-host": "edge.example.com",
        "host": "127.0.0.1:18789",
    }
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    headers.update(extra)
    return headers


def local_client(app: Any) -> TestClient:
    return client_for(app, LOOPBACK, base_url="http://localhost:18789")


def sample(app: Any, name: str, **labels: str) -> float:
    return float(app.state.gateway.metrics.registry.get_sample_value(name, labels) or 0.0)


# -- HTTP --------------------------------------------------------------------------------


def test_anonymous_remote_client_is_refused_before_the_upstream(app: Any) -> None:
    with via_proxy(app) as client:
        response = client.get("/svc/echo", headers=proxied())
    assert response.status_code == 401
    assert response.json()["error"] == "pairing_required"


def test_paired_device_reaches_the_upstream_with_fresh_forwarding_and_identity(app: Any) -> None:
    device = Device("Bob's phone")
    token = pair(app, device)
    forged = {
        "x-forwarded-for": f"203.0.113.66, {CLIENT_IP}",
        "x-real-ip": "203.0.113.66",
        "forwarded": "for=203.0.113.66",
        "remote-user": "admin",
        "x-edge-role": "admin",
        "remote-email": "root@example.com",
    }
    with via_proxy(app) as client:
        response = client.get("/svc/echo?x=1", headers=proxied(token, **forged))
    assert response.status_code == 200
    echo = response.json()
    assert echo["path"] == "/svc/echo"
    assert echo["query"] == "x=1"
    assert header_values(echo, "x-forwarded-for") == [CLIENT_IP]
    assert header_values(echo, "x-forwarded-proto") == ["https"]
    assert header_values(echo, "x-forwarded-host") == ["edge.example.com"]
    assert header_values(echo, "forwarded") == [
        f'for={CLIENT_IP};proto=https;host="edge.example.com"'
    ]
    assert header_values(echo, "x-real-ip") == []
    assert header_values(echo, "remote-user") == [device.id]  # stable, not the name it chose
    assert header_values(echo, "remote-name") == ["Bob's phone"]
    assert header_values(echo, "remote-email") == []
    assert header_values(echo, "x-edge-role") == ["user"]
    assert header_values(echo, "x-edge-device-id") == [device.id]
    assert header_values(echo, "authorization") == []  # the device token stays with Edge


def test_local_client_is_forwarded_as_local(app: Any) -> None:
    with local_client(app) as client:
        echo = client.get("/svc/echo").json()
    assert header_values(echo, "remote-user") == ["local"]
    assert header_values(echo, "x-edge-auth") == ["local"]
    assert header_values(echo, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(echo, "x-edge-device-id") == []


def test_headers_named_in_connection_are_not_forwarded(app: Any) -> None:
    # Traefik CVE-2024-45410: a client must not make the gateway drop or pass hop headers.
    with local_client(app) as client:
        echo = client.get(
            "/svc/echo",
            headers={
                "connection": "keep-alive, X-Hop-Secret",
                "x-hop-secret": "1",
                "keep-alive": "5",
                "te": "trailers",
            },
        ).json()
    assert header_values(echo, "x-hop-secret") == []
    assert header_values(echo, "keep-alive") == []
    assert header_values(echo, "te") == []


def test_upstream_hop_headers_are_not_returned(app: Any) -> None:
    with local_client(app) as client:
        response = client.get("/svc/echo?connection_header=1")
    assert response.status_code == 200
    assert "x-upstream-secret" not in response.headers


def test_authorization_and_session_cookie_stay_with_edge_other_cookies_pass(app: Any) -> None:
    token = pair(app, Device())
    with via_proxy(app) as client:  # under https: the gateway's cookie is the __Host- one
        echo = client.get(
            "/svc/echo", headers=proxied(cookie=f"theme=dark; __Host-edge_session={token}; lang=en")
        ).json()
    assert header_values(echo, "cookie") == ["theme=dark; lang=en"]
    assert header_values(echo, "x-edge-auth") == ["paired"]


def test_strip_prefix_keeps_the_encoded_path_under_the_upstream_base(app: Any) -> None:
    with local_client(app) as client:
        # (an encoded '/' is refused since the path policy: see test_forwarding_paths.py)
        echo = client.get("/strip/a%20b/c%3F?q=1%202").json()
    assert echo["raw_path"] == "/base/a%20b/c%3F"
    assert echo["query"] == "q=1%202"


def test_request_body_is_forwarded_whole(app: Any) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with local_client(app) as client:
        echo = client.post("/svc/upload", content=payload).json()
    assert echo["method"] == "POST"
    assert echo["body_length"] == len(payload)


def test_head_and_no_content_answers_arrive_without_a_body(app: Any) -> None:
    with local_client(app) as client:
        head = client.head("/svc/echo")
        empty = client.delete("/svc/echo?status=204")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) > 0
    assert head.content == b""
    assert empty.status_code == 204
    assert empty.content == b""


def test_streamed_response_arrives_whole(app: Any) -> None:
    with local_client(app) as client:
        response = client.get("/svc/stream?chunks=5")
    assert response.text == "".join(f"chunk {i}\n" for i in range(5))


def test_upstream_redirect_to_itself_becomes_a_gateway_path(app: Any) -> None:
    with local_client(app) as client:
        plain = client.get("/svc/x?redirect=/svc/next", follow_redirects=False)
        stripped = client.get("/strip/x?redirect=/base/next", follow_redirects=False)
    assert plain.status_code == 302
    assert plain.headers["location"] == "/svc/next"
    assert stripped.headers["location"] == "/strip/next"


def test_upstream_cookies_reach_the_client_and_are_never_shared(app: Any) -> None:
    with local_client(app) as client:
        first = client.get("/svc/echo?set_cookie=alice")
        client.cookies.clear()
        second = client.get("/svc/echo").json()
    assert "app_cookie=alice" in first.headers["set-cookie"]
    assert header_values(second, "cookie") == []


def test_prefix_without_slash_redirects_to_the_prefix(app: Any) -> None:
    with local_client(app) as client:
        response = client.get("/svc?a=1", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "/svc/?a=1"


def test_unreachable_upstream_is_502_json_and_counted(app: Any) -> None:
    before = sample(app, "edge_upstream_requests_total", upstream="down", code_class="5xx")
    with local_client(app) as client:
        response = client.get("/down/x")
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"
    assert "'down'" in response.json()["detail"]
    assert (
        sample(app, "edge_upstream_requests_total", upstream="down", code_class="5xx") == before + 1
    )


def test_slow_upstream_is_504_json(app: Any) -> None:
    with local_client(app) as client:
        response = client.get("/slow/x?delay=3")
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"


def test_successful_forwarding_is_counted_by_upstream_name(app: Any) -> None:
    before = sample(app, "edge_upstream_requests_total", upstream="stripped", code_class="2xx")
    with local_client(app) as client:
        client.get("/strip/x")
    assert (
        sample(app, "edge_upstream_requests_total", upstream="stripped", code_class="2xx")
        == before + 1
    )
    assert sample(app, "edge_upstream_duration_seconds_count", upstream="stripped") >= 1


# -- WebSocket -----------------------------------------------------------------------------


def test_websocket_frames_relay_both_ways_with_identity(app: Any) -> None:
    device = Device("tablet")
    token = pair(app, device)
    with (
        via_proxy(app) as client,
        client.websocket_connect("/svc/live", headers=proxied(token)) as ws,
    ):
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
        ws.send_bytes(b"\x00\x01binary")
        assert ws.receive_bytes() == b"\x00\x01binary"
        ws.send_text("headers")
        seen = {k: v for k, v in json.loads(ws.receive_text())}
    assert seen["x-forwarded-for"] == CLIENT_IP
    assert seen["x-forwarded-proto"] == "https"
    assert seen["remote-user"] == device.id
    assert seen["remote-name"] == "tablet"
    assert seen["x-edge-device-id"] == device.id
    assert "authorization" not in seen


def test_websocket_subprotocol_is_negotiated_by_the_upstream(app: Any) -> None:
    with (
        local_client(app) as client,
        client.websocket_connect(
            "/svc/live", headers={"host": "localhost:18789"}, subprotocols=["chat.v2", "chat.v1"]
        ) as ws,
    ):
        assert ws.accepted_subprotocol == "chat.v2"


def test_a_malformed_subprotocol_offer_is_dropped_not_a_server_error(app: Any) -> None:
    """``a/b`` is no RFC 7230 token: the client library would raise on it, so it is not sent on."""
    with (
        local_client(app) as client,
        client.websocket_connect(
            "/svc/live",
            headers={"host": "localhost:18789", "sec-websocket-protocol": "a/b, chat.v1, x y"},
        ) as ws,
    ):
        assert ws.accepted_subprotocol == "chat.v1"
        ws.send_text("still relayed")
        assert ws.receive_text() == "still relayed"


def test_websocket_close_code_and_reason_of_the_upstream_reach_the_client(app: Any) -> None:
    with (
        local_client(app) as client,
        client.websocket_connect("/svc/live", headers={"host": "localhost:18789"}) as ws,
    ):
        ws.send_text("close:4001:finished here")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert (info.value.code, info.value.reason) == (4001, "finished here")


def test_anonymous_websocket_is_refused_with_an_http_401(app: Any) -> None:
    with (
        via_proxy(app) as client,
        pytest.raises(WebSocketDenialResponse) as info,
        client.websocket_connect("/svc/live", headers=proxied()),
    ):
        pass
    assert info.value.status_code == 401
    assert info.value.json()["error"] == "pairing_required"


def test_websocket_from_a_foreign_origin_is_refused(app: Any) -> None:
    token = pair(app, Device())
    headers = proxied(token, origin="https://evil.example.net")
    with (
        via_proxy(app) as client,
        pytest.raises(WebSocketDenialResponse) as info,
        client.websocket_connect("/svc/live", headers=headers),
    ):
        pass
    assert info.value.status_code == 403


def test_websocket_to_an_unreachable_upstream_is_a_502(app: Any) -> None:
    with (
        local_client(app) as client,
        pytest.raises(WebSocketDenialResponse) as info,
        client.websocket_connect("/down/live", headers={"host": "localhost:18789"}),
    ):
        pass
    assert info.value.status_code == 502


def test_websocket_is_not_forwarded_where_the_upstream_does_not_allow_it(app: Any) -> None:
    with (
        local_client(app) as client,
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/nows/live", headers={"host": "localhost:18789"}) as ws,
    ):
        ws.receive_text()


# -- the pure parts ------------------------------------------------------------------------


def test_end_to_end_drops_hop_by_hop_and_connection_named_headers() -> None:
    headers = [
        (b"Connection", b"close, X-Private"),
        (b"x-private", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"Basic x"),
        (b"content-type", b"text/plain"),
    ]
    assert end_to_end(headers) == [(b"content-type", b"text/plain")]


def test_forwarded_header_quotes_ipv6_and_hosts() -> None:
    resolution = Resolution(
        client_ip="2001:db8::7",
        client_port=None,
        peer_ip="::1",
        peer_port=1,
        trusted_peer=True,
        scheme="wss",
        host="edge.example.com:8443",
        local=False,
        local_rule="",
        hops=(),
        anomalies=(),
        header_used="x-forwarded-for",
    )
    headers = dict(forwarding_headers(resolution))
    assert headers[b"x-forwarded-for"] == b"2001:db8::7"
    assert headers[b"x-forwarded-proto"] == b"https"
    assert headers[b"forwarded"] == b'for="[2001:db8::7]";proto=https;host="edge.example.com:8443"'
    for hostile in ('x", for=1.2.3.4', "a;for=10.0.0.1", "a,b", "h=1", "a b"):
        # a Host the client wrote is never copied into a structured header
        headers = dict(forwarding_headers(dataclasses.replace(resolution, host=hostile)))
        assert headers[b"forwarded"] == b'for="[2001:db8::7]";proto=https'
        assert b"x-forwarded-host" not in headers


# -- the pooled client under the forwarding ------------------------------------------------


class RawServer:
    """An HTTP/1.1 server on loopback written by hand, to misbehave on purpose.

    Each connection answers ``answers`` requests with keep-alive, then closes
    without a word (as an upstream does when its keep-alive timer runs out).
    With ``answers=0`` it accepts connections and never reads from them.
    """

    def __init__(self, answers: int = 1, delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.answers == 0:
                await asyncio.sleep(3600)
            for _ in range(self.answers):
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head.split(b"\r\n", 1)[0])
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(self.delay)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            writer.close()


async def serve(server: RawServer) -> tuple[asyncio.Server, str]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    return listener, f"http://127.0.0.1:{port}"


def settings(url: str, **extra: Any) -> UpstreamSettings:
    return UpstreamSettings(prefix="/raw/", url=url, share_control_origin=True, **extra)


async def fetch(
    session: aiohttp.ClientSession, url: str, method: str = "GET", data: bytes | None = None
) -> bytes:
    async with session.request(method, url, data=data) as response:
        return await response.read()


def test_keepalive_connections_are_reused() -> None:
    async def scenario() -> tuple[int, list[bytes]]:
        upstream = RawServer(answers=3)
        listener, url = await serve(upstream)
        async with upstream_session(settings(url)) as session:
            bodies = [await fetch(session, f"{url}/{i}") for i in range(3)]
        listener.close()
        return upstream.connections, bodies

    connections, bodies = asyncio.run(scenario())
    assert bodies == [b"ok", b"ok", b"ok"]
    assert connections == 1


def test_get_on_a_keepalive_connection_the_upstream_closed_is_sent_again() -> None:
    async def scenario() -> tuple[int, list[bytes]]:
        upstream = RawServer(answers=1)
        listener, url = await serve(upstream)
        async with upstream_session(settings(url)) as session:
            first = await fetch(session, f"{url}/a")
            await asyncio.sleep(0)  # the close may or may not have been seen yet
            second = await fetch(session, f"{url}/b")
        listener.close()
        return upstream.connections, [first, second]

    connections, bodies = asyncio.run(scenario())
    assert bodies == [b"ok", b"ok"]
    assert connections == 2


def test_post_is_never_sent_twice() -> None:
    async def scenario() -> list[bytes]:
        upstream = RawServer(answers=1)
        listener, url = await serve(upstream)
        async with upstream_session(settings(url)) as session:
            await fetch(session, f"{url}/a")
            with contextlib.suppress(aiohttp.ClientError):
                # the closed connection is either noticed before sending or fails the POST
                await fetch(session, f"{url}/b", method="POST", data=b"once")
        listener.close()
        return upstream.requests

    requests = asyncio.run(scenario())
    assert requests.count(b"POST /b HTTP/1.1") <= 1


def test_open_connections_are_bounded_and_the_wait_is_a_timeout() -> None:
    async def scenario() -> type[BaseException] | None:
        upstream = RawServer(answers=1, delay=2.0)
        listener, url = await serve(upstream)
        session = upstream_session(settings(url, connect_timeout=0.2), max_connections=1)
        busy = asyncio.ensure_future(fetch(session, f"{url}/slow"))
        await asyncio.sleep(0.1)
        caught: type[BaseException] | None = None
        try:
            await fetch(session, f"{url}/waiting")
        except TimeoutError as exc:
            caught = type(exc)
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await busy
        await session.close()
        listener.close()
        return caught

    caught = asyncio.run(scenario())
    assert caught is not None and issubclass(caught, aiohttp.ClientError)  # mapped to 504


def test_an_upstream_that_stops_reading_the_body_gets_504_not_a_hang(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, dict[str, Any]]:
        upstream = RawServer(answers=0)
        listener, url = await serve(upstream)
        app = create_app(
            base_config(tmp_path, upstreams=[{"prefix": "/deaf/", "share_control_origin": True, "url": url, "timeout": 0.5}])
        )
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            # far more than the socket buffers hold, so the upload stalls for good
            response = await client.post("/deaf/upload", content=b"x" * (64 * 1024 * 1024))
        for route in app.routes:
            if isinstance(route, UpstreamRoute):
                await route.aclose()  # no lifespan under ASGITransport, so no Gateway.stop
        listener.close()
        await listener.wait_closed()
        return response.status_code, response.json()

    status, body = asyncio.run(scenario())
    assert status == 504
    assert body["error"] == "upstream_timeout"


def test_the_upstream_gets_only_the_headers_the_client_sent(app: Any) -> None:
    with local_client(app) as client:
        for name in ("accept", "accept-encoding", "user-agent"):
            del client.headers[name]
        echo = client.post("/svc/upload", content=b"payload").json()
    sent = {name for name, _ in echo["headers"]}
    assert {"accept", "accept-encoding", "user-agent", "content-type"}.isdisjoint(sent)
    assert echo["body"] == "payload"


def test_utf8_header_values_reach_the_upstream_byte_for_byte(app: Any) -> None:
    with local_client(app) as client:
        echo = client.get("/svc/echo", headers={b"x-name": "café ✓".encode()}).json()
    assert [value.encode("latin-1") for value in header_values(echo, "x-name")] == [
        "café ✓".encode()
    ]


def test_a_header_value_that_is_not_utf8_is_refused_not_altered(app: Any) -> None:
    async def scenario() -> httpx.Response:
        # the test client would re-encode the value as UTF-8; the ASGI transport sends it raw
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.get("/svc/echo", headers={b"x-name": "café".encode("latin-1")})

    response = asyncio.run(scenario())
    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_request",
        "detail": "header 'x-name' is not UTF-8 and cannot be forwarded unchanged",
    }


def test_chunked_request_body_is_forwarded_whole(app: Any) -> None:
    def parts() -> Iterator[bytes]:
        yield b"first "
        yield b"second"

    with local_client(app) as client:
        echo = client.post("/svc/upload", content=parts()).json()
    assert echo["body"] == "first second"


async def _gzipped(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An upstream answering with a gzip-encoded body, as a compressing app server does."""
    if scope["type"] == "http":
        body = gzip.compress(b"compressed " * 100)
        headers = [(b"content-encoding", b"gzip"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def test_encoded_response_passes_through_as_the_upstream_encoded_it(tmp_path: Path) -> None:
    with UvicornThread(_gzipped) as upstream:
        app = create_app(base_config(tmp_path, upstreams=[{"prefix": "/z/", "share_control_origin": True, "url": upstream.url}]))
        with local_client(app) as client, client.stream("GET", "/z/x") as response:
            raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == b"compressed " * 100


def test_a_path_that_cannot_go_on_a_request_line_is_400(app: Any) -> None:
    route = next(r for r in app.routes if isinstance(r, UpstreamRoute) and r.prefix == "/svc/")
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/svc/\u00ff",
        "raw_path": b"/svc/\xff",
        "query_string": b"",
        "headers": [],
        RESOLUTION_KEY: Resolution(
            client_ip="127.0.0.1",
            client_port=1,
            peer_ip="127.0.0.1",
            peer_port=1,
            trusted_peer=False,
            scheme="http",
            host="localhost",
            local=True,
            local_rule="loopback",
            hops=(),
            anomalies=(),
            header_used=None,
        ),
        AUTH_KEY: LOCAL,
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(route.handle(scope, receive, send))
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"] == "bad_request"


def test_pooled_sessions_are_closed_when_the_app_shuts_down(app: Any) -> None:
    route = next(r for r in app.routes if isinstance(r, UpstreamRoute) and r.prefix == "/svc/")
    with local_client(app) as client:
        client.get("/svc/echo")
        sessions = list(route.pool._sessions.values())
    assert sessions
    assert all(session.closed for session in sessions)


class EdgeThread(UvicornThread):
    """Edge under uvicorn with its lifespan, so ``Gateway.stop`` closes the pooled sessions."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.server.config.lifespan = "on"


async def _breaks_off(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An upstream that promises 100 bytes, sends 2 and stops (uvicorn then cuts the connection)."""
    if scope["type"] == "http":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
        )
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})


def test_an_upstream_that_breaks_off_mid_body_cuts_the_clients_connection(tmp_path: Path) -> None:
    with UvicornThread(_breaks_off) as upstream:
        app = create_app(base_config(tmp_path, upstreams=[{"prefix": "/b/", "share_control_origin": True, "url": upstream.url}]))
        with EdgeThread(app) as edge, pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{edge.url}/b/x", timeout=10)
