"""``edge pair`` through real nginx with a private certificate (``--ca-file``), and ``--logout``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer, free_port
from tests.integration.proxies import Nginx, start_nginx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]


def pair(server: EdgeServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "pair", *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def behind_nginx(
    edge_server_factory: Callable[..., EdgeServer], tmp_path: Path
) -> Iterator[tuple[EdgeServer, Nginx]]:
    server = edge_server_factory({"proxy": {"trusted_proxies": ["127.0.0.1"]}})
    nginx = start_nginx(tmp_path / "nginx", server.port, free_port())
    try:
        yield server, nginx
    finally:
        nginx.stop()


def test_a_private_ca_is_named_with_its_flag_and_the_flag_gets_through(
    behind_nginx: tuple[EdgeServer, Nginx],
) -> None:
    server, nginx = behind_nginx
    refused = pair(server, "--url", nginx.url, "--token", GATEWAY_TOKEN, "--wait", "0")
    assert refused.returncode == 1
    assert "TLS certificate is not trusted" in refused.stderr
    assert "--ca-file" in refused.stderr
    through = pair(
        server,
        "--url",
        nginx.url,
        "--token",
        GATEWAY_TOKEN,
        "--wait",
        "0",
        "--ca-file",
        str(nginx.cert),
    )
    # It reached the gateway through nginx: a pairing request now waits for an operator.
    assert through.returncode == 1 and "not approved within 0s" in through.stderr, through.stderr
    listed = json.loads(server.cli("devices", "list", "--json").stdout)
    assert len(listed["requests"]) == 1


def test_logout_revokes_the_device_and_deletes_its_credentials(
    behind_nginx: tuple[EdgeServer, Nginx],
) -> None:
    server, nginx = behind_nginx
    code = json.loads(server.cli("devices", "invite", "--url", nginx.url, "--json").stdout)["code"]
    ca = ("--ca-file", str(nginx.cert))
    paired = pair(server, "--url", nginx.url, "--invite", code, *ca)
    assert paired.returncode == 0, paired.stderr
    device_id = json.loads((Path(server.env["EDGE_PAIR_DIR"]) / "device.json").read_text())[
        "deviceId"
    ]
    out = pair(server, "--logout", "--json", *ca)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "loggedOut": True,
        "url": nginx.url,
        "revoked": True,
        "deviceId": device_id,
    }
    assert not (Path(server.env["EDGE_PAIR_DIR"]) / "device.json").exists()
    assert not (Path(server.env["EDGE_PAIR_DIR"]) / "device.key").exists()
    listed = json.loads(server.cli("devices", "list", "--json").stdout)
    assert device_id not in {device["id"] for device in listed["devices"]}
    again = pair(server, "--status")
    assert again.returncode == 1 and "not paired" in again.stderr
