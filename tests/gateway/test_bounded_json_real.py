"""Deeply nested, oversized and broken JSON against the real server: a reason, never a crash."""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from edge import create_app
from tests.conftest import Device, base_config
from tests.gateway.test_forwarding_real import EdgeThread
from tests.integration.proxies import ws_handshake

DEEP = "[" * 50_000 + "]" * 50_000


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeThread]:
    # the access log on, so every request leaves a record to look for errors beside
    with EdgeThread(create_app(base_config(tmp_path, logging={"access_log": True}))) as server:
        yield server


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Edge's own records too: its loggers do not propagate to the root."""
    logger = logging.getLogger("edge")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(100):  # the server thread logs the request just after answering it
        if any(r.name.startswith("edge") for r in caplog.records):
            break
        time.sleep(0.05)
    assert any(r.name.startswith("edge") for r in caplog.records)  # Edge's log was seen
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"connect","auth":' + "[" * 5000 + "]" * 5000 + "}",
        "[" * 60_000,
        '{"type":"connect","client":' + '{"a":' * 40 + "1" + "}" * 40 + "}",
    ],
)
def test_a_deep_connect_frame_closes_with_invalid_handshake(
    edge: EdgeThread, frame: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), connect(
        f"ws://127.0.0.1:{edge.port}/ws", open_timeout=30, proxy=None
    ) as ws:
        json.loads(ws.recv(timeout=5))  # the challenge
        ws.send(frame)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "invalid handshake")
    no_errors(caplog)


def test_a_deep_request_frame_after_hello_is_answered_and_the_socket_stays(
    edge: EdgeThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), connect(
        f"ws://127.0.0.1:{edge.port}/ws", open_timeout=30, proxy=None
    ) as ws:
        assert ws_handshake(ws, Device("console"), {})["type"] == "hello"
        ws.send('{"type":"req","id":1,"method":"self.whoami","params":' + DEEP + "}")
        answer = json.loads(ws.recv(timeout=5))
        while answer.get("type") != "res":
            answer = json.loads(ws.recv(timeout=5))
        assert answer["ok"] is False
        assert "deeper than 32" in answer["error"]["message"]
        ws.send(json.dumps({"type": "req", "id": 2, "method": "self.whoami", "params": {}}))
        again = json.loads(ws.recv(timeout=5))
        while again.get("type") != "res":
            again = json.loads(ws.recv(timeout=5))
    assert again["ok"] is True
    no_errors(caplog)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("[" * 30_000, "deeper than 32"),
        ('{"a":' * 33 + "1" + "}" * 33, "deeper than 32"),
        ("{'ttl': 1}", "not valid JSON"),
    ],
)
def test_a_deep_or_broken_rest_body_is_a_400_with_its_reason(
    edge: EdgeThread, body: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    with caplog.at_level(logging.INFO):
        conn.request(
            "POST", "/api/invites", body=body, headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
    conn.close()
    assert response.status == 400
    assert reason in answer["detail"]
    no_errors(caplog)
