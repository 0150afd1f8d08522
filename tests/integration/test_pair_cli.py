"""``edge pair``: a command-line device against a running gateway, approved with the CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

# With local.loopback off, the test client on 127.0.0.1 is remote and must pair.
REMOTE_LOOPBACK = {"local": {"loopback": False}}


def pair_cmd(server: EdgeServer, *args: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", "pair", "--url", server.url, *args]


def pending(server: EdgeServer) -> list[dict[str, object]]:
    return list(json.loads(server.cli("devices", "list", "--json").stdout)["requests"])


def test_pair_waits_for_cli_approval_then_reconnects_with_its_device_token(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(REMOTE_LOOPBACK)
    proc = subprocess.Popen(
        pair_cmd(server, "--token", GATEWAY_TOKEN, "--name", "build box", "--wait", "60"),
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        requests: list[dict[str, object]] = []
        while not requests and time.monotonic() < deadline:
            time.sleep(0.2)
            requests = pending(server)
        assert requests and requests[0]["name"] == "build box"
        server.cli("devices", "approve", str(requests[0]["id"]))
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "paired as 'build box'" in out
    assert str(requests[0]["id"]) in err  # the request id and approve command were shown
    pair_dir = server.env["EDGE_PAIR_DIR"]
    for name in ("device.key", "device.json"):
        mode = stat.S_IMODE((Path(pair_dir) / name).stat().st_mode)
        assert mode == 0o600, name

    status = subprocess.run(
        pair_cmd(server, "--status"), env=server.env, capture_output=True, text=True, timeout=30
    )
    assert status.returncode == 0, status.stderr
    assert "OK" in status.stdout
    again = subprocess.run(
        pair_cmd(server), env=server.env, capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 0, again.stderr  # stored device token, no gateway token needed


def test_pair_with_a_wrong_token_says_what_to_do(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(REMOTE_LOOPBACK)
    result = subprocess.run(
        pair_cmd(server, "--token", "wrong-token"),
        env=server.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "unauthorized: gateway token mismatch" in result.stderr


def test_pair_status_when_not_paired_is_refused(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(REMOTE_LOOPBACK, start=False)
    result = subprocess.run(
        pair_cmd(server, "--status"), env=server.env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "not paired" in result.stderr
