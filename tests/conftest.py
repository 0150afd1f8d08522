"""Shared fixtures: a gateway app on a temporary data_dir, and a real Ed25519 test device."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.gateway.test_notify import Receiver
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from edge import create_app
from edge.pairing.identity import DeviceKey

GATEWAY_TOKEN = "test-gateway-token-0123456789abcdefghijklmnop"
REMOTE = ("203.0.113.7", 40000)
LOOPBACK = ("127.0.0.1", 40001)

# Property tests check what is generated, not how fast: on two cores shared with real servers
# and a browser, generation and examples are slower than on an idle machine, so neither
# hypothesis' per-example deadline nor its "generation is too slow" check may fail a test.
settings.register_profile(
    "edge", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("edge")

# `edge serve` records itself in the per-user runtime directory, and commands run without -c
# use what they find there: the suite's gateways are kept out of the real one (and out of a
# gateway someone runs beside the suite). Processes the tests start inherit it.
os.environ["XDG_RUNTIME_DIR"] = _RUNTIME_DIR = tempfile.mkdtemp(prefix="edge-tests-run-")
atexit.register(shutil.rmtree, _RUNTIME_DIR, ignore_errors=True)


class RecordCollector(logging.Handler):
    """Keeps every record that reaches one of Edge's loggers, for tests that count them.

    Edge's loggers do not propagate to the root. Whether pytest's ``caplog``
    sees them depends on the pytest version and on whether the logger already
    existed when the test began, so counting through ``caplog`` is not
    repeatable; this handler is attached to the logger itself, exactly once.
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@contextlib.contextmanager
def logged(name: str, level: int = logging.NOTSET) -> Iterator[RecordCollector]:
    """Collect the records of ``level`` or above logged to ``name`` (and its children)."""
    collector = RecordCollector(level)
    logger = logging.getLogger(name)
    logger.addHandler(collector)
    try:
        yield collector
    finally:
        logger.removeHandler(collector)


def base_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "auth": {"token": GATEWAY_TOKEN},
        # An in-process client has no kernel peer, so its owner cannot be proven: these
        # tests judge loopback clients by the address-only rule. Real `edge serve` tests
        # (tests/integration) keep the default `uid` rule.
        "local": {"peer_check": "address"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return base_config(tmp_path)


@pytest.fixture
def app(config: dict[str, Any]) -> Iterator[Any]:
    application = create_app(config)
    yield application


def client_for(
    app: Any, address: tuple[str, int] = REMOTE, base_url: str = "http://edge.example.com"
) -> TestClient:
    return TestClient(app, client=address, base_url=base_url)


class Device:
    """A test device: an Ed25519 key that runs the real handshake."""

    def __init__(self, name: str = "test device") -> None:
        self.key = DeviceKey.generate()
        self.name = name
        self.token: str | None = None

    @property
    def id(self) -> str:
        return self.key.device_id

    def connect_frame(
        self, nonce: str, auth: dict[str, str] | None = None, role: str = "user"
    ) -> dict[str, Any]:
        return {
            "type": "connect",
            "auth": auth if auth is not None else {},
            "device": self.key.device_field(nonce, role),
            "client": {"name": self.name, "app": "test", "version": "1"},
            "role": role,
        }

    def handshake(
        self, ws: Any, auth: dict[str, str] | None = None, role: str = "user"
    ) -> dict[str, Any]:
        challenge = ws.receive_json()
        assert challenge["type"] == "challenge"
        ws.send_text(json.dumps(self.connect_frame(challenge["nonce"], auth, role)))
        reply: dict[str, Any] = ws.receive_json()
        if reply.get("type") == "hello":
            self.token = reply["deviceToken"]
        return reply


@pytest.fixture
def device() -> Device:
    return Device()


def open_ws(client: TestClient, headers: dict[str, str] | None = None) -> Any:
    """``websocket_connect('/ws')`` with the Host of the client's base URL.

    Starlette's test client always sends ``Host: testserver`` on WebSockets,
    which the locality and same-origin rules rightly treat as a foreign name.
    """
    merged = {"host": client.base_url.netloc.decode()}
    merged.update(headers or {})
    return client.websocket_connect("/ws", headers=merged)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a free loopback port, stopped afterwards."""
    from tests.gateway.test_notify import Receiver  # a test module: imported when used

    server = Receiver()
    server.start()
    yield server
    server.stop()
