"""Real processes on loopback: ``edge serve`` (and helpers for other servers).

Every server binds 127.0.0.1 on a free ephemeral port and is stopped by the
test (fixture) that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import GATEWAY_TOKEN

pytestmark = pytest.mark.integration


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    host: str = "127.0.0.1",
    timeout: float = 20.0,
    proc: subprocess.Popen[Any] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass
class EdgeServer:
    """A running ``edge serve`` process on loopback."""

    port: int
    config_path: Path
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[Any] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def cli(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``edge <args> --config <this server's config>`` and return the result."""
        result = subprocess.run(
            [sys.executable, "-m", "edge.cli", *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self.env,
            input=input,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"edge {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self, *extra: str) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--config", str(self.config_path), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; edge serve said:\n{self.log()}") from None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"edge on {self.url} never became ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def edge_server_factory(tmp_path: Path) -> Iterator[Callable[..., EdgeServer]]:
    """Make (and on teardown stop) ``edge serve`` processes: ``factory(config_overrides, start=True)``."""
    servers: list[EdgeServer] = []

    def factory(
        overrides: dict[str, Any] | None = None,
        *,
        start: bool = True,
        name: str = "edge",
        data_dir: Path | None = None,
        workers: int = 1,
    ) -> EdgeServer:
        port = free_port()
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        config: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": port, "workers": workers},
            "data_dir": str(data_dir or directory / "data"),
            "auth": {"token": GATEWAY_TOKEN},
        }
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("EDGE_", "PROMETHEUS_MULTIPROC"))
        }
        env["EDGE_PAIR_DIR"] = str(directory / "pair")
        server = EdgeServer(
            port=int(config["server"]["port"]),
            config_path=write_config(directory / "edge.yaml", config),
            data_dir=Path(config["data_dir"]),
            log_path=directory / "edge.log",
            env=env,
        )
        servers.append(server)
        if start:
            server.start()
        return server

    yield factory
    for server in servers:
        server.stop()
