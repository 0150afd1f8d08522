"""Instructions per HTTP request, counted by callgrind: the bare app, Edge, and Edge's layers.

Usage: python benchmarks/http_instructions.py [--quick] [--requests 1000] [--check]

``http_stack.py`` measures requests per second, which on a shared two-core
machine moves by a tenth from one run to the next. This benchmark counts
what does not move: the instructions a server executes per request, under
``valgrind --tool=callgrind`` (the same count for the same binary and inputs,
whatever else the machine is doing). Each server runs alone under callgrind;
all requests go one after another on one keep-alive connection: a warm-up,
its counters zeroed, a second warm-up, a dump that is set aside, then
``--requests`` requests and the dump that is counted.
Every request is the one ``http_stack.py`` sends (``GET /healthz`` from the
trusted proxy 127.0.0.1 with ``X-Forwarded-For`` and a paired device's bearer
token). The servers, each one uvicorn worker with ``edge serve``'s settings:

1. bare:                 the bare Starlette app of ``http_stack.py``;
2. bare + proxy headers: the same behind uvicorn's ``ProxyHeadersMiddleware``;
3. edge, no middleware:  Edge's app without its two middlewares (its routes
                         and endpoint: what routing among them costs), on the
                         protocol classes ``edge serve`` gives uvicorn (bounded
                         heads, each connection's owner), as row 4;
4. edge, resolution:     with ``ClientResolutionMiddleware`` only;
5. edge serve:           ``edge serve`` itself, resolution and guard (the full stack).

The differences between rows 1, 3, 4 and 5 are what routing, resolution and
the guard (credential check and metrics) cost inside the real server. The
target is row 5 at no more than row 2: Edge's whole stack costing no more than
uvicorn's own proxy middleware. ``--check`` exits 1 when it costs more
(``--quick`` also leaves out rows 3 and 4). The
kernel's share (socket reads and writes) is not counted, so the ratios here
are of user-space work, and larger than the requests-per-second ratios of
``http_stack.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.http_stack import (  # noqa: E402
    PATH,
    clean_env,
    edge_serve,
    free_port,
    machine_line,
    managed,
    paired_request_headers,
    serve_bare,
    wait_ready,
)

WARM_UP_REQUESTS = 300
VALGRIND_START_TIMEOUT = 300.0  # Python with Edge's imports starts slowly under callgrind


# -- Edge's app with layers removed (served with --serve) ---------------------------------------


def edge_without_middleware() -> Any:
    """Edge's app (config from ``$EDGE_CONFIG``) with neither of its middlewares."""
    from edge.app import create_app

    app = create_app(None)
    app.user_middleware = []
    return app


def edge_resolution_only() -> Any:
    """Edge's app with ``ClientResolutionMiddleware`` and without ``GuardMiddleware``."""
    from edge.app import create_app
    from edge.gateway.guard import ClientResolutionMiddleware

    app = create_app(None)
    app.user_middleware = [m for m in app.user_middleware if m.cls is ClientResolutionMiddleware]
    return app


FACTORIES = {"no-middleware": edge_without_middleware, "resolution": edge_resolution_only}


# -- counting -----------------------------------------------------------------------------------


def send_requests(port: int, count: int, headers: dict[str, str]) -> None:
    """``count`` GETs one after another on one keep-alive connection; each must answer 200 ok."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {PATH} HTTP/1.1\r\n{lines}\r\n".encode()
    buffered = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        for _ in range(count):
            conn.sendall(request)
            while True:
                head, found, rest = buffered.partition(b"\r\n\r\n")
                if found:
                    length = _content_length(head)
                    if len(rest) >= length:
                        if not head.startswith(b"HTTP/1.1 200 ") or json.loads(rest[:length]) != {
                            "status": "ok"
                        }:
                            raise SystemExit(f"unexpected answer: {head!r} {rest[:length]!r}")
                        buffered = rest[length:]
                        break
                chunk = conn.recv(65536)
                if not chunk:
                    raise SystemExit("the server closed the connection")
                buffered += chunk


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise SystemExit(f"no content-length in {head!r}")


def callgrind_control(pid: int, option: str) -> None:
    subprocess.run(
        ["callgrind_control", option, str(pid)], capture_output=True, check=True, timeout=120
    )


def dumped_instructions(prefix: Path, part: int) -> int:
    """The main thread's instruction total in dump ``part`` (``<prefix>.<part>-01``).

    Only the thread running the event loop (where every request is served) is
    counted: the event watcher and other background threads wake on wall-clock
    timers, and under callgrind a request takes fifty times longer, so their
    work would weigh fifty times more per request than it does in a real run.
    """
    path = Path(f"{prefix}.{part}-01")
    if not path.exists():
        raise SystemExit(f"callgrind wrote no dump at {path}")
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


@dataclass(frozen=True)
class Row:
    name: str
    instructions: float  # per request


def count(
    name: str, command: list[str], port: int, headers: dict[str, str], args: argparse.Namespace
) -> Row:
    """Instructions per request of one server started by ``command`` under callgrind."""
    out = Path(args.tmp) / f"callgrind.{name.replace(' ', '-')}"
    valgrind = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={out}",
        *command,
    ]
    env = {**clean_env(), "EDGE_CONFIG": str(args.config), "PYTHONHASHSEED": "0"}
    log = Path(args.tmp) / f"{out.name}.log"
    with managed(valgrind, log, cwd=REPO, env=env) as proc:
        wait_ready(f"http://127.0.0.1:{port}{PATH}", proc, timeout=VALGRIND_START_TIMEOUT)
        send_requests(port, WARM_UP_REQUESTS, headers)
        # The first dump after zeroing also holds a one-time cost of some ten million
        # instructions (callgrind taking the request among it): it takes the warm-up's second
        # half and is set aside; the second dump holds the counted requests alone.
        callgrind_control(proc.pid, "--zero")
        send_requests(port, WARM_UP_REQUESTS, headers)
        callgrind_control(proc.pid, "--dump")
        send_requests(port, args.requests, headers)
        callgrind_control(proc.pid, "--dump")
    return Row(name, dumped_instructions(out, 2) / args.requests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="300 counted requests, no per-layer rows"
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when edge serve costs more instructions than bare + proxy headers",
    )
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        name, port = args.serve
        app = (
            f"benchmarks.http_instructions:{FACTORIES[name].__name__}"
            if name in FACTORIES
            else "benchmarks.http_stack:bare_app"
        )
        # Edge's layers run on edge serve's own protocol classes, as in the full server.
        serve_bare(
            int(port),
            proxy_headers=name == "bare-proxied",
            app=app,
            edge_protocols=name in FACTORIES,
        )
        return 0
    if args.quick:
        args.requests = 300
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed; run scripts/install-test-deps")

    me = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    with tempfile.TemporaryDirectory(prefix="edge-bench-instructions-") as directory:
        tmp = Path(directory)
        args.tmp = tmp
        with edge_serve(tmp) as edge:  # pairs the benchmark device into the data directory
            headers = paired_request_headers(edge)
            args.config = edge.config
        servers = [("bare", "bare"), ("bare + proxy headers", "bare-proxied")]
        if not args.quick:
            servers += [
                ("edge, no middleware", "no-middleware"),
                ("edge, resolution", "resolution"),
            ]
        rows = []
        for label, name in servers:
            port = free_port()
            rows.append(count(label, [*me, name, str(port)], port, headers, args))
        port = free_port()
        edge_command = [sys.executable, "-m", "edge.cli", "serve", "--config", str(args.config)]
        rows.append(count("edge serve", [*edge_command, "--port", str(port)], port, headers, args))
    return report(rows, args)


def report(rows: list[Row], args: argparse.Namespace) -> int:
    by_name = {row.name: row.instructions for row in rows}
    bare = by_name["bare"]
    print(
        f"{machine_line()}; valgrind --tool=callgrind; on one keep-alive connection, "
        f"{2 * WARM_UP_REQUESTS} requests to warm up, then {args.requests:,} counted; "
        "user-space instructions of the event loop's thread"
    )
    print()
    proxied = by_name["bare + proxy headers"]
    print("| server | instructions per request | bare / server | server / bare + proxy headers |")
    print("|--------|-------------------------:|--------------:|------------------------------:|")
    for row in rows:
        print(
            f"| {row.name} | {row.instructions:,.0f} | {bare / row.instructions:.2f} | "
            f"{row.instructions / proxied:.2f} |"
        )
    edge = by_name["edge serve"]
    print()
    if "edge, resolution" in by_name:
        routing = by_name["edge, no middleware"] - bare
        resolution = by_name["edge, resolution"] - by_name["edge, no middleware"]
        guard = edge - by_name["edge, resolution"]
        print(
            f"Edge's own work: {edge - bare:,.0f} instructions per request over the bare app: "
            f"routing among its routes {routing:,.0f}, resolution {resolution:,.0f}, "
            f"guard (credential check, metrics) {guard:,.0f}; uvicorn's proxy headers "
            f"{proxied - bare:,.0f}"
        )
    else:
        print(
            f"Edge's own work: {edge - bare:,.0f} instructions per request over the bare app; "
            f"uvicorn's proxy headers {proxied - bare:,.0f}"
        )
    ratio = edge / proxied
    verdict = "ok" if ratio <= 1.0 else "over target"
    print(
        f"edge serve / bare + proxy headers = {ratio:.3f} instructions per request "
        f"({verdict}, target at most 1.00)"
    )
    return 1 if args.check and ratio > 1.0 else 0


if __name__ == "__main__":
    sys.exit(main())
