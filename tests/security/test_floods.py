"""Floods against a real ``edge serve``: socket caps, handshake timeouts, huge and slow frames, slow upstreams.

Every server binds 127.0.0.1. The waits below bound how long a test may
hang; none of them asserts a speed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import Device
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

RATE_LIMITED = "unauthorized: too many failed attempts"


def _open(server: EdgeServer, address: str | None = None) -> ClientConnection:
    headers = {"X-Forwarded-For": address} if address else {}
    return connect(server.ws_url, additional_headers=headers, proxy=None, open_timeout=10)


def _closed_with(ws: ClientConnection, wait: float = 15) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=wait)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason


@pytest.fixture
def server(edge_server_factory: Callable[..., EdgeServer]) -> EdgeServer:
    return edge_server_factory(
        {"proxy": {"trusted_proxies": ["127.0.0.1"]}, "logging": {"level": "warning"}}
    )


def test_the_33rd_unauthenticated_socket_from_one_address_is_closed_with_1008(
    server: EdgeServer,
) -> None:
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(32):
            ws = stack.enter_context(_open(server, "203.0.113.10"))
            assert json.loads(ws.recv(timeout=10))["type"] == "challenge"
            sockets.append(ws)
        extra = stack.enter_context(_open(server, "203.0.113.10"))
        assert _closed_with(extra) == (1008, RATE_LIMITED)
        # Another address is not affected, and a freed slot is usable again.
        other = stack.enter_context(_open(server, "203.0.113.11"))
        assert json.loads(other.recv(timeout=10))["type"] == "challenge"
        sockets[0].close()
        for _ in range(100):  # the server frees the slot once it has seen the close
            with _open(server, "203.0.113.10") as again, contextlib.suppress(ConnectionClosed):
                if json.loads(again.recv(timeout=10))["type"] == "challenge":
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("a freed slot never became usable again")


def test_a_frame_over_64_kib_before_hello_closes_with_1009(server: EdgeServer) -> None:
    with _open(server, "203.0.113.12") as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "connect", "pad": "x" * (64 * 1024)}))
        assert _closed_with(ws)[0] == 1009


def test_a_frame_over_1_mib_after_hello_closes_with_1009(server: EdgeServer) -> None:
    device = Device("big sender")
    with _open(server) as ws:  # direct loopback: local, so hello comes at once
        challenge = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {}, "admin")))
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        ws.send(json.dumps({"type": "req", "id": 1, "method": "self.whoami"}))
        # An admin socket is also sent events (its own approval among them): read past them.
        reply = json.loads(ws.recv(timeout=10))
        while reply["type"] == "event":
            reply = json.loads(ws.recv(timeout=10))
        assert reply["type"] == "res" and reply["id"] == 1 and reply["ok"] is True
        ws.send("x" * (1024 * 1024 + 1))
        assert _closed_with(ws)[0] == 1009


class SilentUpstream:
    """An upstream that accepts connections and never answers; ``held`` are its connections."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.held: list[socket.socket] = []

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])


@pytest.fixture
def silent_upstream() -> Iterator[SilentUpstream]:
    upstream = SilentUpstream()
    listener, held = upstream.listener, upstream.held
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


@pytest.fixture
def strict_server(
    edge_server_factory: Callable[..., EdgeServer], silent_upstream: SilentUpstream
) -> EdgeServer:
    """A 1-second handshake, and an upstream that never answers (5-second timeout)."""
    return edge_server_factory(
        {
            "pairing": {"handshake_timeout": 1},
            "logging": {"level": "warning"},
            "upstreams": [
                {
                    "prefix": "/slow/",
                    "share_control_origin": True,
                    "url": f"http://127.0.0.1:{silent_upstream.port}",
                    "timeout": 5,
                }
            ],
        }
    )


def test_an_idle_socket_is_closed_by_the_handshake_timeout(strict_server: EdgeServer) -> None:
    with _open(strict_server) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "challenge"
        assert _closed_with(ws) == (1008, "handshake timeout")


class RawSocket:
    """A WebSocket client by hand, to send what no client library would: a frame byte by byte."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def upgrade(self, port: int) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /ws HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    def read_frame(self) -> tuple[int, bytes]:
        """One unmasked server frame: (opcode, payload)."""
        first, second = self._exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._exactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._exactly(8))[0]
        return first & 0x0F, self._exactly(length)


def test_a_client_dribbling_its_connect_frame_is_cut_by_the_handshake_timeout(
    strict_server: EdgeServer,
) -> None:
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=15) as sock:
        raw = RawSocket(sock)
        assert raw.upgrade(strict_server.port).startswith(b"HTTP/1.1 101")
        opcode, payload = raw.read_frame()
        assert opcode == 0x1 and json.loads(payload)["type"] == "challenge"
        # A masked text frame announcing 1,000 bytes, then one byte at a time.
        sock.sendall(bytes([0x81, 0x80 | 126]) + struct.pack("!H", 1000) + b"\x00\x00\x00\x00")
        sock.settimeout(0.3)
        close: tuple[int, bytes] | None = None
        for _ in range(100):  # at most 30 s of dribbling
            try:
                sock.sendall(b"{")
            except OSError:
                break
            try:
                close = raw.read_frame()
                break
            except TimeoutError:
                continue
        assert close is not None, "the server kept waiting for the dribbled frame"
        opcode, payload = close
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1008
        assert payload[2:].decode() == "handshake timeout"


def test_a_silent_upstream_gets_504_and_blocks_no_other_request(
    strict_server: EdgeServer, silent_upstream: SilentUpstream
) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        slow = [
            pool.submit(httpx.get, f"{strict_server.url}/slow/{i}", timeout=30, trust_env=False)
            for i in range(8)
        ]
        for _ in range(200):  # until the upstream holds all eight (at most 20 s)
            if len(silent_upstream.held) >= 8:
                break
            time.sleep(0.1)
        assert len(silent_upstream.held) >= 8
        # While eight requests wait on the silent upstream, the gateway answers others.
        health = httpx.get(f"{strict_server.url}/healthz", timeout=30, trust_env=False)
        assert health.status_code == 200
        assert not all(future.done() for future in slow)
        answers: list[Any] = [future.result() for future in slow]
    assert [answer.status_code for answer in answers] == [504] * 8
    assert all(answer.json()["error"] == "upstream_timeout" for answer in answers)
