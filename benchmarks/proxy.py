"""Requests per second and latency of one upstream reached four ways, side by side.

Usage: python benchmarks/proxy.py [--duration 10] [--connections 32] [--threads 1] [--quick]
                                  [--rounds 1] [--compare LABEL=SOURCE ...]

1. direct:       wrk -> upstream
2. edge:         wrk -> Edge (upstream forwarding) -> upstream
3. nginx:        wrk -> nginx -> upstream                    (nginx alone)
4. nginx + edge: wrk -> nginx -> Edge -> upstream            (a production stack, plain HTTP)

``--compare LABEL=SOURCE`` adds a target ``edge (LABEL)``: Edge run from
another source tree (a directory holding the ``edge`` package, or a git ref of
this repository, exported with ``git archive``), on its own port, in front of
the same upstream, so two versions of the forwarding are measured in one run.

The upstream is a minimal ASGI app (a 2-byte JSON answer) under one uvicorn
worker; Edge runs ``edge serve`` with one worker, its client is local (direct
loopback), so the cost shown is resolution, the guard and the forwarding
itself. nginx proxies with HTTP/1.1 and a keepalive pool, as the shipped
configuration does. Every server binds 127.0.0.1 on a free port; every
process started here is stopped at the end. Load comes from ``wrk --latency``
for a bounded duration per target, after a short warm-up; the targets take
turns in one run so background load lands on all of them; with ``--rounds N``
they take turns N times and each figure is the round with the median
requests/s.
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
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.pairing.identity import DeviceKey  # noqa: E402 - after the path is set

TOKEN = "benchmark-gateway-token-0123456789abcdefghij"


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The upstream: answers every request at once with ``{}``."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode} before serving {url}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def process(args: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
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


NGINX_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    upstream edge_gateway {{ server 127.0.0.1:{edge}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{nginx_app};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
    server {{
        listen 127.0.0.1:{nginx_edge};
        location / {{
            proxy_pass http://edge_gateway;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Result:
    target: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(target: str, output: str) -> Result:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if rps is None or p50 is None or p99 is None:
        raise SystemExit(f"cannot read wrk's output for {target}:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return Result(target, float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors)


def wrk(
    url: str, duration: float, connections: int, threads: int, headers: tuple[str, ...] = ()
) -> str:
    extra = [arg for header in headers for arg in ("-H", header)]
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", *extra, url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    if result.returncode != 0:
        raise SystemExit(f"wrk failed on {url}:\n{result.stderr}")
    return result.stdout


def compared_source(text: str) -> tuple[str, str]:
    """``LABEL=SOURCE`` from the command line."""
    label, _, source = text.partition("=")
    if not label or not source or not re.fullmatch(r"[\w.+-]+", label):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not LABEL=SOURCE (LABEL of letters, digits, .+-_)"
        )
    return label, source


def source_tree(source: str, tmp: Path, label: str) -> Path:
    """A directory holding the ``edge`` package: SOURCE itself, or a git ref exported into ``tmp``."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "edge" / "__init__.py").is_file():
            raise SystemExit(f"--compare {label}={source}: no edge package in that directory")
        return path.resolve()
    target = tmp / f"tree-{label}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", source], capture_output=True, timeout=60
    )
    if archive.returncode != 0:
        raise SystemExit(
            f"--compare {label}={source}: neither a directory nor a git ref: "
            f"{archive.stderr.decode(errors='replace').strip()}"
        )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True, timeout=60)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 s per target")
    parser.add_argument(
        "--rounds", type=int, default=1, help="times the targets take turns; the median is shown"
    )
    parser.add_argument(
        "--compare",
        type=compared_source,
        action="append",
        default=[],
        metavar="LABEL=SOURCE",
        help="also forward through Edge from SOURCE (a directory or a git ref)",
    )
    args = parser.parse_args()
    if args.quick:
        args.duration = 3.0
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    labels = [label for label, _ in args.compare]
    if len(set(labels)) != len(labels):
        parser.error("each --compare needs its own LABEL")
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed; run scripts/install-test-deps")

    with tempfile.TemporaryDirectory(prefix="edge-bench-") as directory:
        tmp = Path(directory)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("EDGE_", "PROMETHEUS_MULTIPROC"))
        }
        env["PYTHONPATH"] = str(REPO)
        ports = {name: free_port() for name in ("upstream", "edge", "nginx_app", "nginx_edge")}
        trees = {label: source_tree(source, tmp, label) for label, source in args.compare}
        compared_ports = {label: free_port() for label in trees}
        for name, port in [("edge", ports["edge"]), *compared_ports.items()]:
            config = {
                "server": {"host": "127.0.0.1", "port": port, "workers": 1},
                "data_dir": str(tmp / f"data-{name}"),
                "auth": {"token": TOKEN},
                "proxy": {"trusted_proxies": ["127.0.0.1"]},
                "logging": {"level": "warning"},
                "upstreams": [{"prefix": "/svc/", "share_control_origin": True, "url": f"http://127.0.0.1:{ports['upstream']}"}],
            }
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config))
        user = "user root;" if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, user=user, **ports))
        upstream_cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.proxy:upstream_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(ports["upstream"]),
            "--log-level",
            "warning",
            "--no-access-log",
            "--lifespan",
            "off",
        ]
        nginx_cmd = ["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"]
        with contextlib.ExitStack() as stack:
            upstream = stack.enter_context(
                process(upstream_cmd, tmp / "upstream.log", cwd=REPO, env=env)
            )
            edges = {
                name: stack.enter_context(
                    process(
                        edge_command(tmp / f"{name}.yaml"),
                        tmp / f"{name}.log",
                        cwd=tree,
                        env={**env, "PYTHONPATH": str(tree)},
                    )
                )
                for name, tree in [("edge", REPO), *trees.items()]
            }
            nginx = stack.enter_context(process(nginx_cmd, tmp / "nginx.log"))
            targets = {
                "direct": f"http://127.0.0.1:{ports['upstream']}/svc/x",
                "edge": f"http://127.0.0.1:{ports['edge']}/svc/x",
                **{
                    f"edge ({label})": f"http://127.0.0.1:{port}/svc/x"
                    for label, port in compared_ports.items()
                },
                "nginx": f"http://127.0.0.1:{ports['nginx_app']}/svc/x",
                "nginx + edge": f"http://127.0.0.1:{ports['nginx_edge']}/svc/x",
            }
            wait_ready(targets["direct"], upstream)
            for name, edge in edges.items():
                port = ports["edge"] if name == "edge" else compared_ports[name]
                wait_ready(f"http://127.0.0.1:{port}/readyz", edge)
            wait_ready(targets["nginx"], nginx)
            # Behind nginx the client is not local to Edge: it sends a device token,
            # as a paired client would. (The direct "edge" target is a local client.)
            auth = (f"Authorization: Bearer {device_token(ports['edge'])}",)
            headers = {"nginx + edge": auth}
            for name, url in targets.items():
                wrk(
                    url.replace("/svc/x", "/svc/warmup"),
                    1.0,
                    args.connections,
                    args.threads,
                    headers.get(name, ()),
                )
            rounds: dict[str, list[Result]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    output = wrk(
                        url, args.duration, args.connections, args.threads, headers.get(name, ())
                    )
                    rounds[name].append(parse_wrk(name, output))
    report([median_round(results) for results in rounds.values()], args)


def edge_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "edge.cli", "serve", "--config", str(config)]


def median_round(results: list[Result]) -> Result:
    """The round with the median requests/s (the lower middle one of an even count)."""
    ordered = sorted(results, key=lambda r: r.requests_per_second)
    return ordered[(len(ordered) - 1) // 2]


def device_token(edge_port: int) -> str:
    """Pair a benchmark device over the control socket (a local client: approved at once)."""
    key = DeviceKey.generate()
    with connect(f"ws://127.0.0.1:{edge_port}/ws", proxy=None, open_timeout=5) as ws:
        challenge = json.loads(ws.recv(timeout=5))
        ws.send(
            json.dumps(
                {
                    "type": "connect",
                    "auth": {},
                    "device": key.device_field(challenge["nonce"], "user"),
                    "client": {"name": "benchmark", "app": "benchmark", "version": "1"},
                    "role": "user",
                }
            )
        )
        hello = json.loads(ws.recv(timeout=5))
    if hello.get("type") != "hello":
        raise SystemExit(f"could not pair the benchmark device: {hello}")
    return str(hello["deviceToken"])


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
        f"{args.rounds} round(s), load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| path | requests/s | p50 ms | p99 ms | errors |")
    print("|------|-----------:|-------:|-------:|-------:|")
    for r in results:
        print(
            f"| {r.target} | {r.requests_per_second:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
        )


if __name__ == "__main__":
    main()
