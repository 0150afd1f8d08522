"""Bounded request heads in a real ``edge serve``: too large, too slow, too many per address.

Raw sockets from 127.0.0.2 send what an attacker would: an endless header,
a head a byte at a time, more unfinished connections than one address may
hold. Nothing here measures time: a slow head is fed until the server closes
the connection (with a generous cap so a missing defence fails, not hangs).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import Device
from tests.integration.conftest import EdgeServer
from tests.integration.proxies import ws_handshake

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.2"
GIVE_UP = 60.0  # only so a missing defence fails instead of hanging


@pytest.fixture
def edge(edge_server_factory: Callable[..., EdgeServer]) -> EdgeServer:
    return edge_server_factory(
        {"server": {"head_timeout": 2, "max_connections_per_address": 3, "max_head_bytes": 16384}}
    )


@contextlib.contextmanager
def raw(edge: EdgeServer, address: str = ATTACKER) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", edge.port), timeout=GIVE_UP, source_address=(address, 0))
    try:
        yield sock
    finally:
        sock.close()


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def refused(edge: EdgeServer, reason: str) -> float:
    text = httpx.get(f"{edge.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'edge_request_heads_refused_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no edge_request_heads_refused_total for {reason}:\n{text}")


def test_an_endless_head_is_answered_431_and_closed(edge: EdgeServer) -> None:
    with raw(edge) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(64):  # up to 4 MiB, never a blank line
                sock.sendall(b"a" * 65536)
        reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert b'"reason":"too_large"' in reply
    with raw(edge) as sock:  # a whole head, over the cap, in one write
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n")
        assert answer(sock).startswith(b"HTTP/1.1 431 ")
    assert refused(edge, "too_large") == 2


def test_a_head_sent_a_byte_at_a_time_is_closed_408(edge: EdgeServer) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 10000
    with raw(edge) as sock:
        started = time.monotonic()
        closed = False
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.5)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                data = None
            if data is not None:
                reply = data + answer(sock)
                closed = True
                break
            if time.monotonic() - started > GIVE_UP:
                break
        assert closed, "the server kept a slow head open"
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert refused(edge, "slow") == 1


def test_one_address_may_hold_only_so_many_connections(edge: EdgeServer) -> None:
    with raw(edge) as a, raw(edge) as b, raw(edge) as c:
        for sock in (a, b, c):
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # unfinished heads
        with raw(edge) as fourth:
            assert answer(fourth).startswith(b"HTTP/1.1 503 ")
        # another address is not affected
        assert httpx.get(f"{edge.url}/healthz", timeout=10).status_code == 200
    assert refused(edge, "too_many_connections") == 1
    for _ in range(100):  # the server notices the three closes on its own loop
        with raw(edge) as again:
            again.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            reply = answer(again)
        if reply.startswith(b"HTTP/1.1 200 "):
            break
        time.sleep(0.1)
    assert reply.startswith(b"HTTP/1.1 200 ")


def test_ordinary_requests_keepalive_and_websockets_pass(edge: EdgeServer) -> None:
    transport = httpx.HTTPTransport(local_address=ATTACKER)
    with httpx.Client(transport=transport, base_url=edge.url, timeout=10) as client:
        for _ in range(5):  # one kept-alive connection, five heads
            assert client.get("/healthz").status_code == 200
    sockets = [connect(edge.ws_url, open_timeout=30, proxy=None) for _ in range(3)]
    try:
        for ws in sockets:
            assert ws_handshake(ws, Device("console"), {})["type"] == "hello"
    finally:
        for ws in sockets:
            ws.close()
    assert refused(edge, "slow") == 0
    assert refused(edge, "too_large") == 0
    assert refused(edge, "too_many_connections") == 0
