"""Requests per second of a paired HTTP request through Edge, beside a bare app on uvicorn.

Usage: python benchmarks/http_stack.py [--quick] [--duration 5] [--rounds 3] [--connections 32] [--check]

Three servers, each one uvicorn worker with the settings ``edge serve`` uses
(no access log, no server header, the same WebSocket limits), all answering
``GET /healthz`` with ``{"status":"ok"}``:

1. bare:          a Starlette app with that one route, uvicorn without proxy headers;
2. bare + proxy:  the same app behind uvicorn's own ``ProxyHeadersMiddleware``
                  (``--proxy-headers``, 127.0.0.1 trusted);
3. edge:          ``edge serve``, 127.0.0.1 trusted as the proxy: every request is
                  resolved from ``X-Forwarded-For``, is not local, carries the bearer
                  token of a paired device that the guard verifies, and is counted in
                  the metrics (the full stack; ``/healthz`` only adds the endpoint).

Every request carries the same headers (``Host``, ``X-Forwarded-For``,
``Authorization``). Before timing, each server is asked once and Edge is
checked to see the caller as a paired, non-local device. Load comes from
``wrk`` in its own process; the servers take turns for several rounds, so
load from other processes on the machine lands on all of them, and each
figure is the median of its rounds. The target is Edge's whole stack
costing no more than uvicorn's own proxy middleware: ``--check`` exits 1 when
Edge makes fewer requests per second than bare + proxy headers in the same
run (wall-clock figures on a shared machine move by a tenth between runs;
``http_instructions.py --check`` holds the same target in instructions).

The helpers here (free ports, managed processes, a configured ``edge serve``,
pairing a benchmark device, wrk) are shared by the other benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge.cli.serve import UVICORN_SETTINGS  # noqa: E402 - after the path is set
from edge.pairing.identity import DeviceKey  # noqa: E402

TOKEN = "benchmark-gateway-token-0123456789abcdefghij"
CLIENT_IP = "203.0.113.9"
TARGET_RATIO = 1.0  # of bare + proxy headers' requests per second
PATH = "/healthz"


# -- shared helpers ---------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The environment for servers started here: no inherited Edge settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "PROMETHEUS_MULTIPROC"))
    }
    env["PYTHONPATH"] = str(REPO)
    return env


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 30, expect_status: int = 200
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode} before serving {url}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1, trust_env=False).status_code == expect_status:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def managed(args: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own session, stopped (TERM, then KILL) when the block ends."""
    proc = subprocess.Popen(
        args, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, **kwargs
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@dataclass(frozen=True)
class EdgeUnderTest:
    """A running ``edge serve``: where it listens and its configuration file."""

    port: int
    config: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``edge <args> --config <this config>``; raises when it fails."""
        result = subprocess.run(
            [sys.executable, "-m", "edge.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd=REPO,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"edge {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result


@contextlib.contextmanager
def edge_serve(
    tmp: Path,
    env: dict[str, str] | None = None,
    launcher: list[str] | None = None,
    **overrides: Any,
) -> Iterator[EdgeUnderTest]:
    """``edge serve`` on a free loopback port with a benchmark configuration (+ overrides).

    ``launcher`` replaces ``python -m edge.cli`` (a script taking the CLI's arguments).
    """
    port = free_port()
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "workers": 1},
        "data_dir": str(tmp / "data"),
        "auth": {"token": TOKEN},
        "proxy": {"trusted_proxies": ["127.0.0.1"]},
        "logging": {"level": "warning"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    start = launcher or [sys.executable, "-m", "edge.cli"]
    args = [*start, "serve", "--config", str(path)]
    with managed(args, tmp / "edge.log", cwd=REPO, env=env or clean_env()) as proc:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        yield EdgeUnderTest(port, path, proc)


def connect_frame(key: DeviceKey, nonce: str, auth: dict[str, str], role: str) -> str:
    return json.dumps(
        {
            "type": "connect",
            "auth": auth,
            "device": key.device_field(nonce, role),
            "client": {"name": "benchmark", "app": "benchmark", "version": "1"},
            "role": role,
        }
    )


def pair_local_device(port: int) -> tuple[DeviceKey, str]:
    """A device paired over the control socket as a local client (admin at once), and its token."""
    from websockets.sync.client import connect

    key = DeviceKey.generate()
    with connect(f"ws://127.0.0.1:{port}/ws", proxy=None, open_timeout=10) as ws:
        challenge = json.loads(ws.recv(timeout=10))
        ws.send(connect_frame(key, challenge["nonce"], {}, "admin"))
        hello = json.loads(ws.recv(timeout=10))
    if hello.get("type") != "hello":
        raise SystemExit(f"could not pair the benchmark device: {hello}")
    return key, str(hello["deviceToken"])


def server_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/<pid>/stat``), in seconds.

    Time the hypervisor gives to other guests (steal) is not in it, so work per
    CPU second stays comparable on a busy shared host where requests/s does not.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    url: str, duration: float, connections: int, headers: dict[str, str], threads: int = 1
) -> WrkResult:
    extra = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", *extra, url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    output = result.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if result.returncode != 0 or rps is None or p50 is None or p99 is None:
        raise SystemExit(f"wrk failed on {url}:\n{output}{result.stderr}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    total = re.search(r"(\d+) requests in", output)
    return WrkResult(
        float(rps.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        errors,
        int(total.group(1)) if total else 0,
    )


def machine_line() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs ({model}), load average {os.getloadavg()[0]:.1f}"
    )


# -- the bare app -----------------------------------------------------------------------------


def bare_app() -> Any:
    """The comparison: one Starlette route answering what Edge's ``/healthz`` answers."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    return Starlette(routes=[Route(PATH, healthz)])


def serve_bare(
    port: int,
    proxy_headers: bool,
    app: str = "benchmarks.http_stack:bare_app",
    ws: str | None = None,
    edge_protocols: bool = False,
) -> None:
    """uvicorn with ``edge serve``'s settings (``UVICORN_SETTINGS``), on a bare app factory.

    ``edge_protocols``: with the protocol classes ``edge serve`` gives uvicorn
    (bounded heads, each connection's owner and memo) instead of uvicorn's own.
    """
    import uvicorn

    settings = {**UVICORN_SETTINGS, "proxy_headers": proxy_headers}
    if ws is not None:
        settings["ws"] = ws
    if edge_protocols:
        from edge.gateway.protocols import HTTP_PROTOCOL, WS_PROTOCOL

        settings["http"], settings["ws"] = HTTP_PROTOCOL, WS_PROTOCOL
    uvicorn.run(
        app,
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=1,
        forwarded_allow_ips="127.0.0.1",
        log_level="warning",
        timeout_graceful_shutdown=10,
        **settings,  # type: ignore[arg-type]
    )


# -- the benchmark ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    target: str
    requests_per_second: float
    requests_per_cpu_second: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Target:
    """A server under load: the URL wrk asks and the process whose CPU time is read."""

    url: str
    pid: int


def check_edge_sees_paired_client(url: str, headers: dict[str, str]) -> None:
    """Edge must see the wrk request as a paired, non-local device behind the proxy."""
    whoami = httpx.get(f"{url}/api/whoami", headers=headers, timeout=5, trust_env=False).json()
    if (
        whoami["auth"]["state"] != "paired"
        or whoami["local"]
        or whoami["client"]["ip"] != CLIENT_IP
    ):
        raise SystemExit(f"Edge does not see a paired remote client: {whoami}")


def paired_request_headers(edge: EdgeUnderTest) -> dict[str, str]:
    """The headers of the benchmark request: a device paired on ``edge``, behind the proxy."""
    _key, device_token = pair_local_device(edge.port)
    headers = {
        "Host": "edge.example.com",
        "X-Forwarded-For": CLIENT_IP,
        "Authorization": f"Bearer {device_token}",
    }
    check_edge_sees_paired_client(edge.url, headers)
    return headers


def measure(
    targets: dict[str, Target], headers: dict[str, str], args: argparse.Namespace
) -> list[Row]:
    """Rounds of wrk against each target in turn; each row holds the medians of its rounds.

    Requests per CPU second divide the requests wrk completed by the server's
    CPU time during the run: the cost of a request, independent of how much
    CPU the shared host happened to give the server in that round.
    """
    for target in targets.values():
        response = httpx.get(target.url, headers=headers, timeout=5, trust_env=False)
        if response.status_code != 200 or response.json() != {"status": "ok"}:
            raise SystemExit(f"{target.url} answered {response.status_code}: {response.text}")
        run_wrk(target.url, 1.0, args.connections, headers)  # warm-up
    samples: dict[str, list[tuple[WrkResult, float]]] = {name: [] for name in targets}
    names = list(targets)
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            target = targets[name]
            cpu_before = server_cpu_seconds(target.pid)
            result = run_wrk(target.url, args.duration, args.connections, headers)
            cpu = server_cpu_seconds(target.pid) - cpu_before
            samples[name].append((result, result.requests / max(cpu, 1e-9)))
    return [
        Row(
            name,
            statistics.median(s.requests_per_second for s, _ in results),
            statistics.median(per_cpu for _, per_cpu in results),
            statistics.median(s.p50_ms for s, _ in results),
            statistics.median(s.p99_ms for s, _ in results),
            sum(s.errors for s, _ in results),
        )
        for name, results in samples.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s per server")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 below {TARGET_RATIO} of bare + proxy headers' requests/s",
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--proxy-headers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        serve_bare(args.serve_bare, args.proxy_headers)
        return 0
    if args.quick:
        args.duration, args.rounds = 2.0, 2
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; run scripts/install-test-deps")

    with tempfile.TemporaryDirectory(prefix="edge-bench-http-") as directory:
        tmp = Path(directory)
        bare_port, proxied_port = free_port(), free_port()
        me = [sys.executable, str(Path(__file__).resolve())]
        env = clean_env()
        with (
            managed(
                [*me, "--serve-bare", str(bare_port)], tmp / "bare.log", cwd=REPO, env=env
            ) as bare,
            managed(
                [*me, "--serve-bare", str(proxied_port), "--proxy-headers"],
                tmp / "proxied.log",
                cwd=REPO,
                env=env,
            ) as proxied,
            edge_serve(tmp) as edge,
        ):
            wait_ready(f"http://127.0.0.1:{bare_port}{PATH}", bare)
            wait_ready(f"http://127.0.0.1:{proxied_port}{PATH}", proxied)
            headers = paired_request_headers(edge)
            targets = {
                "bare": Target(f"http://127.0.0.1:{bare_port}{PATH}", bare.pid),
                "bare + proxy headers": Target(
                    f"http://127.0.0.1:{proxied_port}{PATH}", proxied.pid
                ),
                "edge": Target(f"{edge.url}{PATH}", edge.proc.pid),
            }
            rows = measure(targets, headers, args)
    return report(rows, args)


def report(rows: list[Row], args: argparse.Namespace) -> int:
    by_name = {row.target: row for row in rows}
    bare, edge, proxied = by_name["bare"], by_name["edge"], by_name["bare + proxy headers"]
    print(
        f"{machine_line()}; one uvicorn worker each; wrk -t1 -c{args.connections}, "
        f"{args.rounds} rounds of {args.duration:g} s, medians"
    )
    print()
    print(
        "| server | requests/s | x bare | x proxy headers | requests per CPU s | x bare "
        "| x proxy headers | p50 ms | p99 ms | errors |"
    )
    print(
        "|--------|-----------:|-------:|----------------:|-------------------:|-------:"
        "|----------------:|-------:|-------:|-------:|"
    )
    for row in rows:
        print(
            f"| {row.target} | {row.requests_per_second:,.0f} | "
            f"{row.requests_per_second / bare.requests_per_second:.2f} | "
            f"{row.requests_per_second / proxied.requests_per_second:.2f} | "
            f"{row.requests_per_cpu_second:,.0f} | "
            f"{row.requests_per_cpu_second / bare.requests_per_cpu_second:.2f} | "
            f"{row.requests_per_cpu_second / proxied.requests_per_cpu_second:.2f} | "
            f"{row.p50_ms:.2f} | {row.p99_ms:.2f} | {row.errors} |"
        )
    ratio = edge.requests_per_second / proxied.requests_per_second
    cpu_ratio = edge.requests_per_cpu_second / proxied.requests_per_cpu_second
    verdict = "ok" if ratio >= TARGET_RATIO else "below target"
    cpu_verdict = "ok" if cpu_ratio >= TARGET_RATIO else "below target"
    print()
    print(
        f"edge / bare + proxy headers = {ratio:.2f} requests/s ({verdict}), {cpu_ratio:.2f} per "
        f"CPU second ({cpu_verdict}), target {TARGET_RATIO}; edge / bare = "
        f"{edge.requests_per_second / bare.requests_per_second:.2f} requests/s, "
        f"{edge.requests_per_cpu_second / bare.requests_per_cpu_second:.2f} per CPU second"
    )
    errors = sum(row.errors for row in rows)
    if errors:
        print(f"{errors} failed or non-2xx responses")
    return 1 if errors or (args.check and ratio < TARGET_RATIO) else 0


if __name__ == "__main__":
    raise SystemExit(main())
