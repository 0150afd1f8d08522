"""``data_dir`` is the root of trust (issue 14, attack 7), against a real ``edge serve``.

The attack: with ``data_dir`` at 0777 another local user swapped in a gateway
token that the next reload accepted; a store truncated under a running gateway
went unnoticed (``/readyz`` stayed 200) and the next start silently made an
empty one. Each defence is pinned here through the real process.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edge.pairing.store.sqlite import marker_path
from tests.conftest import Device
from tests.integration.conftest import EdgeServer
from tests.integration.test_serve import ws_handshake

pytestmark = pytest.mark.integration

Factory = Callable[..., EdgeServer]


def serve_once(server: EdgeServer, *extra: str) -> subprocess.CompletedProcess[str]:
    """``edge serve`` expected to refuse: it must exit on its own, well before the timeout."""
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "serve", "--config", str(server.config_path), *extra],
        capture_output=True,
        text=True,
        env=server.env,
        timeout=60,
    )


def wait_until_not_ready(server: EdgeServer, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.url}/readyz", timeout=5)
        if response.status_code != 200:
            return response
        time.sleep(0.2)
    raise AssertionError(f"/readyz stayed 200 for {timeout}s:\n{server.log()}")


def store_error_lines(server: EdgeServer, needle: str) -> list[str]:
    return [line for line in server.log().splitlines() if " ERROR " in line and needle in line]


def test_a_world_writable_data_dir_refuses_to_start(edge_server_factory: Factory) -> None:
    server = edge_server_factory(start=False)
    server.data_dir.mkdir(parents=True)
    server.data_dir.chmod(0o777)
    result = serve_once(server)
    assert result.returncode == 2, result.stderr
    expected = (
        f"edge: data_dir {server.data_dir} is writable by group and others (mode 0777); "
        f"run: chmod 700 {server.data_dir}"
    )
    assert expected in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert not (server.data_dir / "edge.sqlite3").exists()  # refused before touching anything


def test_a_group_writable_token_file_refuses_to_start(
    edge_server_factory: Factory, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    token_file = secrets / "gateway_token"
    token_file.write_text("t" * 43 + "\n")
    token_file.chmod(0o620)
    server = edge_server_factory(
        {"auth": {"token": None, "token_file": str(token_file)}}, start=False
    )
    result = serve_once(server)
    assert result.returncode == 2, result.stderr
    assert (
        f"edge: gateway token file {token_file} is writable by group (mode 0620); "
        f"run: chmod 600 {token_file}"
    ) in result.stderr.splitlines()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_generated_token_owned_by_another_user_refuses_to_start(
    edge_server_factory: Factory,
) -> None:
    server = edge_server_factory({"auth": {"token": None}}, start=False)
    server.data_dir.mkdir(parents=True, mode=0o700)
    token = server.data_dir / "gateway_token"
    token.write_text("s" * 43 + "\n")
    token.chmod(0o600)
    nobody = pwd.getpwnam("nobody")
    os.chown(token, nobody.pw_uid, nobody.pw_gid)
    result = serve_once(server)
    assert result.returncode == 2
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert (
        f"edge: gateway token file {token} is owned by nobody, not by edge's user {me}; "
        f"run: chown {me} {token}"
    ) in result.stderr.splitlines()


def test_a_truncated_store_turns_readyz_not_ready_with_one_error_line(
    edge_server_factory: Factory,
) -> None:
    server = edge_server_factory()
    store = server.data_dir / "edge.sqlite3"
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    os.truncate(store, 0)
    response = wait_until_not_ready(server)
    assert response.status_code == 503
    assert "shrank" in response.json()["store"]
    time.sleep(5)  # several more checks: the line is written once, not every few seconds
    (line,) = store_error_lines(server, "shrank")
    assert str(store) in line and "restore the file from a backup" in line
    assert httpx.get(f"{server.url}/readyz").status_code == 503


def test_a_deleted_store_turns_readyz_not_ready(edge_server_factory: Factory) -> None:
    server = edge_server_factory()
    (server.data_dir / "edge.sqlite3").unlink()
    response = wait_until_not_ready(server)
    assert "vanished" in response.json()["store"]
    assert len(store_error_lines(server, "vanished")) == 1


def test_a_restart_onto_a_used_data_dir_without_its_store_refuses(
    edge_server_factory: Factory,
) -> None:
    server = edge_server_factory({"auth": {"token": None}})  # the first start generates a token
    server.stop()
    store = server.data_dir / "edge.sqlite3"
    assert (server.data_dir / "gateway_token").exists() and marker_path(store).exists()
    for suffix in ("", "-wal", "-shm"):
        store.with_name(store.name + suffix).unlink(missing_ok=True)
    result = serve_once(server)
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("edge: ")]
    assert f"SQLite store {store} is missing" in line
    assert "edge serve --new-store" in line and "edge store reset" in line
    assert not store.exists()  # nothing was made empty behind the operator's back


def test_a_truncated_store_refuses_the_next_start_and_new_store_starts_over(
    edge_server_factory: Factory,
) -> None:
    server = edge_server_factory()
    server.stop()
    store = server.data_dir / "edge.sqlite3"
    os.truncate(store, 0)
    result = serve_once(server)
    assert result.returncode == 2
    assert f"SQLite store {store} is empty (0 bytes)" in result.stderr
    server.start("--new-store")
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"
    assert list(server.data_dir.glob("edge.sqlite3.old-*")), "the old file is kept aside"
    assert "starting over on an empty store" in server.log()


def test_store_reset_asks_for_yes_then_moves_the_store_aside(
    edge_server_factory: Factory,
) -> None:
    server = edge_server_factory()
    server.stop()
    store = server.data_dir / "edge.sqlite3"
    refused = server.cli("store", "reset", check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert store.exists()
    done = server.cli("store", "reset", "--yes")
    assert "moved aside" in done.stdout
    assert not store.exists() and not marker_path(store).exists()
    server.start()  # the deliberate start on an empty store
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_store_reset_refuses_while_the_gateway_runs(edge_server_factory: Factory) -> None:
    server = edge_server_factory()
    refused = server.cli("store", "reset", "--yes", check=False)
    assert refused.returncode == 1 and "stop edge serve first" in refused.stderr
    assert (server.data_dir / "edge.sqlite3").exists()


def test_reload_refuses_a_token_file_someone_else_could_write(
    edge_server_factory: Factory, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    token_file = secrets / "gateway_token"
    original, swapped = "o" * 43, "x" * 43
    token_file.write_text(original + "\n")
    token_file.chmod(0o600)
    server = edge_server_factory(
        {
            "proxy": {"trusted_proxies": ["127.0.0.1"]},
            "auth": {"token": None, "token_file": str(token_file)},
        }
    )
    token_file.write_text(swapped + "\n")  # another user's swap, through its open mode
    token_file.chmod(0o666)
    # The worker refuses, and `edge gateway reload` reports that answer with exit 1.
    answered = server.cli("gateway", "reload", check=False)
    assert answered.returncode == 1 and "is writable by group and others" in answered.stderr
    deadline = time.monotonic() + 20
    while "reload refused" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    (refusal,) = [line for line in server.log().splitlines() if "reload refused" in line]
    assert " ERROR " in refusal
    assert f"gateway token file {token_file} is writable by group and others" in refusal
    assert f"run: chmod 600 {token_file}" in refusal
    remote = {"X-Forwarded-For": "198.51.100.4"}
    _, closed = ws_handshake(server, Device(), {"token": swapped}, headers=remote)
    assert closed is not None and closed.reason == "unauthorized: gateway token mismatch"
    _, closed = ws_handshake(server, Device(), {"token": original}, headers=remote)
    assert closed is not None and closed.reason == "pairing required"  # the token still in force
