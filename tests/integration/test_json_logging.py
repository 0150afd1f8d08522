"""A real ``edge serve`` with ``logging.format: json``: stderr, line by line from the first.

Every line is one JSON object (uvicorn's start-up and shutdown lines among
them), none with uvicorn's ``color_message`` or a terminal escape. Each
request has an id: a trusted proxy's valid ``X-Request-ID``, else a new one
(a client's own is ignored), echoed on the answer, written in the access and
audit lines and handed to the upstream.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import free_port, stop_process, write_config
from tests.integration.proxies import Process, header_values, start_upstream_process

pytestmark = pytest.mark.integration

GENERATED = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Process]:
    process = start_upstream_process(tmp_path)
    yield process
    process.stop()


class JsonServe:
    """``edge serve`` with stderr kept apart from stdout, so stderr can be read as it is."""

    def __init__(self, tmp_path: Path, upstream_port: int) -> None:
        self.port = free_port()
        self.stderr_path = tmp_path / "stderr.log"
        config = write_config(
            tmp_path / "edge.yaml",
            {
                "server": {"host": "127.0.0.1", "port": self.port},
                "data_dir": str(tmp_path / "data"),
                "auth": {"token": GATEWAY_TOKEN},
                "logging": {"format": "json", "level": "info", "access_log": True},
                # 127.0.0.1 is the proxy; a client on 127.0.0.2 is a peer of no trust.
                "proxy": {"trusted_proxies": ["127.0.0.1"]},
                "upstreams": [
                    {
                        "prefix": "/svc/",
                        "share_control_origin": True,
                        "url": f"http://127.0.0.1:{upstream_port}",
                    }
                ],
            },
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_path.open("wb"),
            env=env,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr_path.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(self.stderr_path.read_text())

    def lines(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as JSON, from the first: one that is not fails here."""
        raw = self.stderr_path.read_bytes()
        assert b"\x1b" not in raw
        parsed = []
        for number, line in enumerate(raw.decode().splitlines(), start=1):
            document = json.loads(line)  # fails the test on the first non-JSON line
            assert isinstance(document, dict), (number, line)
            assert "color_message" not in document, (number, line)
            parsed.append(document)
        return parsed


def access_line(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    (line,) = [
        line
        for line in lines
        if line["logger"] == "edge.access" and line.get("x_request_id") == request_id
    ]
    return line


def test_json_stderr_from_the_first_line_and_request_ids_end_to_end(
    tmp_path: Path, upstream: Process
) -> None:
    server = JsonServe(tmp_path, upstream.port)
    try:
        server.wait_ready()
        proxy = httpx.Client(timeout=10)
        stranger = httpx.Client(
            timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2")
        )

        # The trusted proxy's id is the request's: echoed, and what the upstream is given.
        relayed = proxy.get(f"{server.url}/svc/echo", headers={"X-Request-ID": "nginx-7f3a-01"})
        assert relayed.status_code == 200, relayed.text
        assert relayed.headers["x-request-id"] == "nginx-7f3a-01"
        assert header_values(relayed.json(), "x-request-id") == ["nginx-7f3a-01"]

        # From a peer of no trust the header is a forgery: ignored, a new id in its place.
        spoofed = stranger.get(f"{server.url}/svc/echo", headers={"X-Request-ID": "nginx-7f3a-01"})
        assert spoofed.status_code == 200, spoofed.text
        own = spoofed.headers["x-request-id"]
        assert GENERATED.match(own) and own != "nginx-7f3a-01"
        assert header_values(spoofed.json(), "x-request-id") == [own]
        # Nor can another spelling of the header reach the upstream beside Edge's.
        sneaky = stranger.get(f"{server.url}/svc/echo", headers={"X_Request_ID": "forged"})
        assert "forged" not in json.dumps(sneaky.json())

        # A trusted proxy's value that is too long or not visible ASCII is replaced too.
        for bad in ("x" * 129, "two words"):
            answer = proxy.get(f"{server.url}/healthz", headers={"X-Request-ID": bad})
            assert GENERATED.match(answer.headers["x-request-id"]), bad

        # The audit line of an event a request caused carries the request's id.
        created = proxy.post(
            f"{server.url}/api/invites",
            json={"name": "kiosk"},
            headers={"X-Request-ID": "invite-req-42"},
        )
        assert created.status_code == 200, created.text
        assert created.headers["x-request-id"] == "invite-req-42"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"invite.created" not in (
            server.stderr_path.read_bytes()
        ):
            time.sleep(0.05)
    finally:
        stop_process(server.proc)

    lines = server.lines()
    assert lines, "nothing on stderr"
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "edge.access", "edge.audit"} <= loggers
    messages = [line["msg"] for line in lines]
    assert any(m.startswith("Uvicorn running on") for m in messages), messages
    assert "Application startup complete." in messages
    assert "Shutting down" in messages
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line), line

    assert access_line(lines, "nginx-7f3a-01")["path"] == "/svc/echo"
    assert access_line(lines, own)["client"] == "127.0.0.2"
    assert not [line for line in lines if "nginx-7f3a-01" in json.dumps(line)
                and line.get("x_request_id") != "nginx-7f3a-01"]  # fmt: skip
    (audit,) = [line for line in lines if line.get("event") == "invite.created"]
    assert audit["logger"] == "edge.audit" and audit["x_request_id"] == "invite-req-42"
    assert access_line(lines, "invite-req-42")["status"] == 200
