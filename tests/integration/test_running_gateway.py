"""The CLI finds the running gateway's configuration, and ``edge gateway reload`` tells its answer.

Without ``-c`` a command used to read the built-in defaults, whose
``data_dir`` is ``./data`` of wherever it runs: another world, where ``edge
token show`` found no token. ``edge serve`` now records itself in the
per-user runtime directory (``EDGE_RUNTIME_DIR`` here), and a reload reports
each worker's own answer with its exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GATEWAY_TOKEN
from tests.integration.conftest import EdgeServer, free_port, stop_process, wait_for_port

pytestmark = pytest.mark.integration


def edge(
    *args: str, cwd: Path, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"edge {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result


@pytest.fixture
def recorded(
    edge_server_factory: Callable[..., EdgeServer], tmp_path: Path
) -> Iterator[EdgeServer]:
    server = edge_server_factory(start=False)
    server.env["EDGE_RUNTIME_DIR"] = str(tmp_path / "run")
    server.env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    server.start()
    yield server


def test_a_command_without_c_works_on_the_running_gateway(
    recorded: EdgeServer, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = edge("token", "show", cwd=elsewhere, env=recorded.env)
    assert shown.stdout.strip() == GATEWAY_TOKEN
    assert "using the running gateway's configuration" in shown.stderr
    assert str(recorded.config_path) in shown.stderr
    listed = json.loads(edge("devices", "list", "--json", cwd=elsewhere, env=recorded.env).stdout)
    assert listed["devices"] == [] and listed["requests"] == []
    # -c before the subcommand names the file as -c after it does.
    before = edge("-c", str(recorded.config_path), "token", "show", cwd=elsewhere, env=recorded.env)
    assert before.stdout.strip() == GATEWAY_TOKEN
    assert "running gateway" not in before.stderr


def test_reload_prints_each_workers_own_answer(recorded: EdgeServer, tmp_path: Path) -> None:
    answered = json.loads(recorded.cli("gateway", "reload", "--json").stdout)
    (answer,) = answered["answers"]
    assert answer["ok"] is True and answer["pid"] in answered["signalled"]
    assert answer["source"] == str(recorded.config_path.resolve())
    bad = recorded.config_path.read_text() + "proxy:\n  trusted_proxies: [nonsense]\n"
    recorded.config_path.write_text(bad)
    refused = recorded.cli("gateway", "reload", check=False)
    assert refused.returncode == 2, (
        refused
    )  # the CLI reads the file first: a bad one is a usage error


@pytest.fixture
def on_defaults(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], int]]:
    """``edge serve`` started without a file, in a directory of its own (./data is there)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "PROMETHEUS_MULTIPROC"))
    }
    env["EDGE_RUNTIME_DIR"] = str(tmp_path / "run")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    port = free_port()
    log = (tmp_path / "serve.log").open("ab")
    proc: subprocess.Popen[Any] = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc=proc)
        yield home, env, port
    finally:
        stop_process(proc)


def test_reload_with_a_file_on_a_gateway_started_without_one_says_it_refused(
    on_defaults: tuple[Path, dict[str, str], int], tmp_path: Path
) -> None:
    home, env, port = on_defaults
    # The file an operator would write for it: same data_dir, same port.
    (home / "edge.yaml").write_text(f"server:\n  port: {port}\ndata_dir: ./data\n")
    result = edge("gateway", "reload", "-c", "edge.yaml", cwd=home, env=env, check=False)
    assert result.returncode == 1, result
    assert "sent SIGHUP to 1 worker(s)" in result.stdout
    assert "started without a configuration file" in result.stderr
    assert "edge serve -c <file>" in result.stderr
    # From any other directory, the token is the running gateway's, not a second one.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    token = edge("token", "show", cwd=elsewhere, env=env).stdout.strip()
    assert token == (home / "data" / "gateway_token").read_text().strip()
