"""Every command of the tree with ``--json``, against a real ``edge serve`` and its data_dir.

Each run's stdout must be exactly one JSON document whose keys, at every
depth, are camelCase (the REST API's style); refusals are ``{error, detail}``
with exit 1. The walk fails when a command is added without a run here, and
when a command loses ``--json`` (click then refuses the option: exit 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer, free_port, stop_process, write_config
from tests.unit.test_cli_surface import bad_keys, leaves

pytestmark = pytest.mark.integration


class Walk:
    """Runs ``edge ... --json`` as a shell would and remembers which commands it ran."""

    def __init__(self, server: EdgeServer) -> None:
        self.server = server
        self.ran: set[tuple[str, ...]] = set()

    def run(
        self,
        path: tuple[str, ...],
        *args: str,
        code: int = 0,
        config: bool = True,
        env: dict[str, str] | None = None,
    ) -> Any:
        argv = [*path, *args, "--json"]
        if config:
            argv += ["--config", str(self.server.config_path)]
        result = subprocess.run(
            [sys.executable, "-m", "edge.cli", *argv],
            capture_output=True,
            text=True,
            env={**self.server.env, **(env or {})},
            timeout=90,
        )
        shown = f"edge {' '.join(argv)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == code, shown
        document = json.loads(result.stdout)  # the whole of stdout: one document
        assert bad_keys(document) == [], shown
        is_error = isinstance(document, dict) and set(document) == {"error", "detail"}
        assert is_error == (code != 0 and path != ("doctor",)), shown
        self.ran.add(path)
        return document


def serve_json(tmp_path: Path) -> dict[str, Any]:
    """``edge serve --json`` on a gateway of its own: the banner as one document."""
    port = free_port()
    config = write_config(
        tmp_path / "serve.yaml",
        {
            "server": {"host": "127.0.0.1", "port": port},
            "data_dir": str(tmp_path / "serve-data"),
            "auth": {"token": GATEWAY_TOKEN},
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--json", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, "edge serve --json exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise TimeoutError("edge serve --json never became ready")
    finally:
        stop_process(proc)
    assert proc.stdout is not None
    document: dict[str, Any] = json.loads(proc.stdout.read())
    return document


def test_every_command_prints_one_camel_case_json_document(
    edge_server_factory: Callable[..., EdgeServer], tmp_path: Path
) -> None:
    banner = serve_json(tmp_path)
    assert bad_keys(banner) == []
    assert banner["listening"].startswith("http://127.0.0.1:") and banner["workers"] == 1
    assert banner["token"] == {"source": "auth.token", "path": None}

    # With local.loopback off this test, on 127.0.0.1, is a remote client that must pair.
    server = edge_server_factory({"local": {"loopback": False}})
    walk = Walk(server)
    walk.ran.add(("serve",))

    assert walk.run(("config", "check"))["bind"]["port"] == server.port
    shown = walk.run(("config", "show"))
    assert shown["settings"]["server"]["port"] == server.port
    assert shown["settings"]["auth"]["token"] == "***"
    whoami = walk.run(("explain",), "--peer", "127.0.0.1", "-H", "Host: localhost")
    assert whoami["trustedPeer"] is False and whoami["localRule"]
    assert walk.run(("dashboard",)) == {"url": server.url + "/"}
    findings = walk.run(("doctor",), code=0)
    assert {f["level"] for f in findings} <= {"ok", "warn"}
    assert walk.run(("store", "info"))["backend"] == "sqlite"
    assert walk.run(("token", "show")) == {"token": GATEWAY_TOKEN, "source": "auth.token"}
    assert walk.run(("token", "generate"))["created"] is False
    refused = walk.run(("token", "rotate"), "--yes", code=1)
    assert refused["error"] == "refused"
    assert walk.run(("completion",), "bash", config=False)["shell"] == "bash"
    assert json.loads(walk.run(("config", "schema"), config=False)["schema"])["properties"]
    assert walk.run(("gateway", "reload"))["signalled"]
    assert walk.run(("notify", "status")) == {"webhooks": []}

    pair = ("pair",)
    waiting = walk.run(pair, "--url", server.url, "--token", GATEWAY_TOKEN, "--wait", "0",
                       "--name", "build box", code=1, config=False)  # fmt: skip
    assert "not approved within 0s" in waiting["detail"]
    listing = walk.run(("devices", "list"))
    (request,) = listing["requests"]
    assert request["name"] == "build box" and "createdAt" in request
    approved = walk.run(("devices", "approve"), str(request["id"]), "--user", "alice")
    device_id = approved["approved"]["id"]
    assert approved["approved"]["user"] == "alice"
    paired = walk.run(pair, "--url", server.url, "--token", GATEWAY_TOKEN, config=False)
    assert paired["device"]["id"] == device_id
    assert walk.run(pair, "--status", config=False)["paired"] is True

    renamed = walk.run(("devices", "rename"), device_id, "ci runner")
    assert renamed["renamed"]["name"] == "ci runner"
    assert walk.run(("devices", "assign"), device_id, "bob")["assigned"]["user"] == "bob"

    other = {"EDGE_PAIR_DIR": str(tmp_path / "other-pair")}
    walk.run(pair, "--url", server.url, "--token", GATEWAY_TOKEN, "--wait", "0",
             "--name", "stranger", code=1, config=False, env=other)  # fmt: skip
    (stranger,) = walk.run(("devices", "list"))["requests"]
    rejected = walk.run(("devices", "reject"), str(stranger["id"]))
    assert rejected["rejected"]["name"] == "stranger"

    assert walk.run(("auth", "lockouts")) == {"lockouts": []}
    assert walk.run(("auth", "unlock"), "203.0.113.9", code=1)["error"] == "refused"

    created = walk.run(("devices", "invite"), "--name", "kiosk", "--url", server.url)
    assert created["url"].startswith(server.url) and created["invite"]["name"] == "kiosk"
    (listed,) = walk.run(("devices", "invites"))["invites"]
    assert listed["id"] == created["invite"]["id"]
    cancelled = walk.run(("devices", "invites"), "--cancel", str(listed["id"]))
    assert cancelled["cancelled"]["id"] == listed["id"]

    assert walk.run(("devices", "revoke"), device_id)["revoked"]["status"] == "revoked"

    copied = walk.run(("store", "migrate"), "--to", "sqlite:copy.sqlite3")
    assert copied["copied"]["devices"] == 1 and copied["sourceChanged"] is False
    running = walk.run(("store", "reset"), "--yes", code=1)
    assert "stop edge serve first" in running["detail"]
    server.stop()
    reset = walk.run(("store", "reset"), "--yes")
    assert reset["store"].endswith("edge.sqlite3") and reset["movedAside"]

    assert walk.ran == set(leaves())
