"""Control-socket capacity of one worker: handshakes per second, memory per idle socket, broadcast.

Usage: python benchmarks/websocket.py [--quick] [--sockets 10000] [--duration 10] [--clients 4]

One ``edge serve`` worker on loopback, 127.0.0.1 trusted as its proxy; every
client sends ``X-Forwarded-For`` (a remote device behind the proxy, so no
local shortcut) and is the same paired admin device, reconnecting with its
device token. Clients run in separate processes (``--clients``); each client
task uses its own forwarded address, so the per-address cap on
unauthenticated sockets never interferes.

1. Handshakes: for ``--duration`` seconds, client tasks open the socket,
   answer the challenge (Ed25519 signature over the nonce), wait for
   ``hello`` and close, over and over. Reported: full handshakes per second,
   and per second of the server's CPU time (``/proc/<pid>/stat``), which is
   what one worker can do when the clients do not share its machine.
2. Memory: ``--sockets`` sockets are opened and completed to ``hello``, then
   left idle. The server's RSS is read before (after a warm-up) and after;
   the difference divided by the number of sockets is the cost of one idle
   paired socket (target: under 20 KiB).
3. Broadcast: a new device asks to pair, which sends a ``pairing.requested``
   event to every admin socket. Each client notes when it received it
   (``time.monotonic``, one clock for all processes); reported is the time
   from the request until the first and until the last of the sockets had it.

Steps 1 and 2 run again, in the same run, against a bare Starlette socket
under uvicorn with the same settings (``bare_socket_app``: it plays the
handshake without checking anything): the floor that uvicorn, the WebSocket
library and Starlette set, and so what Edge itself adds.

``--ws`` picks the WebSocket implementation uvicorn runs for both servers
(``websockets``, ``websockets-sansio`` or ``wsproto``; by default the one
``edge serve`` ships with). ``--quick`` uses 1,000 sockets and 3 s of handshakes. The file-descriptor
limit is raised to its hard limit first (server and clients inherit it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.http_stack import (  # noqa: E402 - after the path is set
    TOKEN,
    EdgeUnderTest,
    clean_env,
    connect_frame,
    edge_serve,
    free_port,
    machine_line,
    managed,
    serve_bare,
    server_cpu_seconds,
    wait_ready,
)
from edge.pairing.identity import DeviceKey  # noqa: E402

TARGET_KIB_PER_SOCKET = 20.0
OPEN_CONCURRENCY = 16  # handshakes in flight per client process while opening sockets
HANDSHAKE_TASKS = 16  # reconnect loops per client process in the handshake phase


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


@dataclass(frozen=True)
class Credentials:
    """The paired admin device every client socket is (client processes are forked)."""

    port: int
    key: DeviceKey
    device_token: str


async def handshake(
    credentials: Credentials, key: DeviceKey, address: str
) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(
        f"ws://127.0.0.1:{credentials.port}/ws",
        additional_headers={"X-Forwarded-For": address},
        proxy=None,
        open_timeout=60,
        ping_interval=None,
        max_size=2**20,
    )
    challenge = json.loads(await ws.recv())
    await ws.send(
        connect_frame(key, challenge["nonce"], {"deviceToken": credentials.device_token}, "admin")
    )
    hello = json.loads(await ws.recv())
    return ws, hello


# -- client processes -----------------------------------------------------------------------------


async def _handshake_loop(
    credentials: Credentials, key: DeviceKey, address: str, deadline: float
) -> tuple[int, int]:
    done = failed = 0
    while time.monotonic() < deadline:
        try:
            ws, hello = await handshake(credentials, key, address)
            await ws.close()
        except (OSError, TimeoutError, ValueError) as exc:
            failed += 1
            print(f"handshake failed: {exc}", file=sys.stderr)
            continue
        if hello.get("type") == "hello":
            done += 1
        else:
            failed += 1
    return done, failed


def handshake_client(
    credentials: Credentials, index: int, seconds: float, pipe: Connection
) -> None:
    async def main() -> tuple[int, int]:
        key = credentials.key
        deadline = time.monotonic() + seconds
        results = await asyncio.gather(
            *(
                _handshake_loop(credentials, key, f"10.{index}.{task}.1", deadline)
                for task in range(HANDSHAKE_TASKS)
            )
        )
        return sum(r[0] for r in results), sum(r[1] for r in results)

    pipe.send(asyncio.run(main()))


def idle_client(
    credentials: Credentials, index: int, count: int, expect_event: bool, pipe: Connection
) -> None:
    """Open ``count`` paired sockets, report, note the event's arrival, close when told."""

    async def main() -> None:
        key = credentials.key
        sockets: list[ClientConnection] = []
        failures = 0
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def open_one(n: int) -> None:
            nonlocal failures
            async with gate:
                try:
                    ws, hello = await handshake(credentials, key, f"10.{index}.{n % 250}.2")
                except (OSError, TimeoutError, ValueError) as exc:
                    failures += 1
                    print(f"open failed: {exc}", file=sys.stderr)
                    return
                if hello.get("type") != "hello":
                    failures += 1
                    await ws.close()
                    return
                sockets.append(ws)

        await asyncio.gather(*(open_one(n) for n in range(count)))
        pipe.send(("open", len(sockets), failures))
        received: list[float] = []

        async def wait_event(ws: ClientConnection) -> None:
            with contextlib.suppress(Exception):
                while True:
                    frame = json.loads(await ws.recv())
                    if frame.get("type") == "event" and frame.get("event") == "pairing.requested":
                        received.append(time.monotonic())
                        return

        waiting = [asyncio.create_task(wait_event(ws)) for ws in sockets if expect_event]
        if waiting:
            await asyncio.wait(waiting, timeout=120)
        pipe.send(("event", received))
        await asyncio.to_thread(pipe.recv)  # "close"
        for task in waiting:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        pipe.send(("closed",))

    asyncio.run(main())


# -- the bare socket --------------------------------------------------------------------------------


def bare_socket_app() -> Any:
    """The floor: a Starlette socket that plays the handshake without checking anything, then idles.

    It sends a challenge, reads one frame and answers ``hello`` (no signature,
    no token, no store), so the same clients open it; what an idle socket costs
    there is what uvicorn, the WebSocket library and Starlette cost.
    """
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(json.dumps({"type": "challenge", "nonce": "n" * 43, "ts": 0}))
        await websocket.receive_text()
        await websocket.send_text(json.dumps({"type": "hello", "deviceToken": "t" * 43}))
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


@contextlib.contextmanager
def bare_socket_server(tmp: Path, ws: str | None = None) -> Iterator[tuple[int, int]]:
    """The bare socket app under uvicorn with ``edge serve``'s settings: (port, pid)."""
    port = free_port()
    args = [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port)]
    if ws is not None:
        args += ["--ws", ws]
    with managed(args, tmp / "bare.log", cwd=REPO, env=clean_env()) as proc:
        wait_ready(f"http://127.0.0.1:{port}/ws", proc, expect_status=404)
        yield port, proc.pid


# -- the benchmark ---------------------------------------------------------------------------------


def pair_admin(edge: EdgeUnderTest) -> Credentials:
    """A remote device asks with the gateway token, the CLI approves it as admin, it connects."""
    key = DeviceKey.generate()

    async def ask(auth: dict[str, str]) -> dict[str, Any]:
        ws = await connect(
            f"ws://127.0.0.1:{edge.port}/ws",
            additional_headers={"X-Forwarded-For": "10.255.0.1"},
            proxy=None,
        )
        challenge = json.loads(await ws.recv())
        await ws.send(connect_frame(key, challenge["nonce"], auth, "admin"))
        reply: dict[str, Any] = json.loads(await ws.recv())
        await ws.close()
        return reply

    asked = asyncio.run(ask({"token": TOKEN}))
    edge.cli("devices", "approve", asked["requestId"])
    hello = asyncio.run(ask({"token": TOKEN}))
    if hello.get("type") != "hello":
        raise SystemExit(f"could not pair the benchmark device: {hello}")
    return Credentials(edge.port, key, str(hello["deviceToken"]))


@dataclass(frozen=True)
class Results:
    """One server's figures: Edge, or the bare socket beside it."""

    handshakes_per_second: float
    handshakes_per_cpu_second: float
    handshake_failures: int
    sockets: int
    open_failures: int
    kib_per_socket: float
    rss_before_kib: int
    rss_after_kib: int
    broadcast_first_ms: float = float("nan")
    broadcast_last_ms: float = float("nan")
    broadcast_received: int = 0


def measure_handshakes(
    credentials: Credentials, pid: int, clients: int, seconds: float
) -> tuple[float, float, int]:
    context = multiprocessing.get_context("fork")
    pipes, processes = [], []
    cpu_before = server_cpu_seconds(pid)
    started = time.monotonic()
    for index in range(clients):
        parent, child = context.Pipe()
        process = context.Process(
            target=handshake_client, args=(credentials, index, seconds, child)
        )
        process.start()
        pipes.append(parent)
        processes.append(process)
    outcomes = [pipe.recv() for pipe in pipes]
    elapsed = time.monotonic() - started
    cpu = server_cpu_seconds(pid) - cpu_before
    for process in processes:
        process.join(30)
    done = sum(o[0] for o in outcomes)
    return done / elapsed, done / max(cpu, 1e-9), sum(o[1] for o in outcomes)


@dataclass(frozen=True)
class Idle:
    sockets: int
    failures: int
    rss_before_kib: int
    rss_after_kib: int
    delays: list[float]


def measure_idle(
    credentials: Credentials, pid: int, clients: int, sockets: int, broadcast: bool
) -> Idle:
    """Open ``sockets`` idle sockets from ``clients`` processes; with ``broadcast``, time an event.

    The broadcast: a new device asks to pair, so every admin socket gets
    ``pairing.requested``; each client notes when each of its sockets had it.
    """
    context = multiprocessing.get_context("fork")
    time.sleep(1.0)
    before = server_rss_kib(pid)
    pipes, processes = [], []
    share = [sockets // clients + (1 if i < sockets % clients else 0) for i in range(clients)]
    for index, count in enumerate(share):
        parent, child = context.Pipe()
        process = context.Process(
            target=idle_client, args=(credentials, 100 + index, count, broadcast, child)
        )
        process.start()
        pipes.append(parent)
        processes.append(process)
    opened = [pipe.recv() for pipe in pipes]
    time.sleep(2.0)  # let the server settle (buffers, the allocator)
    after = server_rss_kib(pid)
    sent_at = asyncio.run(ask_to_pair(credentials.port)) if broadcast else 0.0
    received: list[float] = []
    for pipe in pipes:
        _kind, times = pipe.recv()
        received.extend(times)
    for pipe in pipes:
        pipe.send("close")
    for pipe in pipes:
        pipe.recv()
    for process in processes:
        process.join(60)
    return Idle(
        sockets=sum(o[1] for o in opened),
        failures=sum(o[2] for o in opened),
        rss_before_kib=before,
        rss_after_kib=after,
        delays=[t - sent_at for t in received],
    )


async def ask_to_pair(port: int) -> float:
    """A new device asks with the gateway token; the time its connect frame was sent."""
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws",
        additional_headers={"X-Forwarded-For": "10.254.0.1"},
        proxy=None,
    )
    challenge = json.loads(await ws.recv())
    sent_at = time.monotonic()
    await ws.send(connect_frame(DeviceKey.generate(), challenge["nonce"], {"token": TOKEN}, "user"))
    with contextlib.suppress(Exception):
        await ws.recv()
    await ws.close()
    return sent_at


def run_server(
    credentials: Credentials, pid: int, args: argparse.Namespace, broadcast: bool
) -> Results:
    rate, per_cpu, handshake_failures = measure_handshakes(
        credentials, pid, min(args.clients, 2), args.duration
    )
    idle = measure_idle(credentials, pid, args.clients, args.sockets, broadcast)
    delays = idle.delays
    return Results(
        handshakes_per_second=rate,
        handshakes_per_cpu_second=per_cpu,
        handshake_failures=handshake_failures,
        sockets=idle.sockets,
        open_failures=idle.failures,
        kib_per_socket=(idle.rss_after_kib - idle.rss_before_kib) / max(idle.sockets, 1),
        rss_before_kib=idle.rss_before_kib,
        rss_after_kib=idle.rss_after_kib,
        broadcast_first_ms=1000 * min(delays) if delays else float("nan"),
        broadcast_last_ms=1000 * max(delays) if delays else float("nan"),
        broadcast_received=len(delays),
    )


WS_IMPLEMENTATIONS = ("websockets", "websockets-sansio", "wsproto")


def edge_cli_with(ws: str | None, cli_args: list[str]) -> int:
    """The ``edge`` CLI, its ``serve`` running uvicorn's WebSocket implementation ``ws``."""
    if ws is not None:
        from uvicorn.config import WS_PROTOCOLS
        from uvicorn.importer import import_from_string

        import edge.gateway.protocols as protocols

        base = import_from_string(WS_PROTOCOLS[ws])
        protocols.WS_PROTOCOL = protocols.with_peer_owner(base, "WebSocketProtocol")
    from edge.cli import main as edge_main

    return edge_main(cli_args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 sockets, 3 s of handshakes")
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of handshakes")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 at {TARGET_KIB_PER_SOCKET} KiB per socket or more",
    )
    parser.add_argument(
        "--ws",
        choices=WS_IMPLEMENTATIONS,
        help="the WebSocket implementation uvicorn runs (default: edge serve's)",
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--edge-cli", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.edge_cli is not None:
        return edge_cli_with(args.ws, args.edge_cli)
    if args.serve_bare is not None:
        serve_bare(
            args.serve_bare,
            False,
            app="benchmarks.websocket:bare_socket_app",
            ws=args.ws,
        )
        return 0
    if args.quick:
        args.sockets, args.duration = 1_000, 3.0
    limit = raise_fd_limit()
    if limit < args.sockets + 200:
        raise SystemExit(f"the descriptor limit is {limit}; {args.sockets} sockets need more")
    with tempfile.TemporaryDirectory(prefix="edge-bench-ws-") as directory:
        tmp = Path(directory)
        launcher = None
        if args.ws is not None:
            launcher = [sys.executable, str(Path(__file__).resolve()), "--ws", args.ws]
            launcher.append("--edge-cli")
        with edge_serve(tmp, launcher=launcher) as edge:
            credentials = pair_admin(edge)
            edge_results = run_server(credentials, edge.proc.pid, args, broadcast=True)
        with bare_socket_server(tmp, args.ws) as (port, pid):
            bare_credentials = Credentials(port, credentials.key, credentials.device_token)
            bare_results = run_server(bare_credentials, pid, args, broadcast=False)
    return report(edge_results, bare_results, args)


def report(r: Results, bare: Results, args: argparse.Namespace) -> int:
    print(
        f"{machine_line()}; one uvicorn worker per server, the same uvicorn settings; "
        f"{args.clients} client processes"
    )
    print()
    print("| measure | edge | bare Starlette socket | edge / bare |")
    print("|---------|-----:|----------------------:|------------:|")
    rows = (
        (
            "full handshakes per second (clients on the same 2 cores)",
            r.handshakes_per_second,
            bare.handshakes_per_second,
        ),
        (
            "full handshakes per second of server CPU",
            r.handshakes_per_cpu_second,
            bare.handshakes_per_cpu_second,
        ),
    )
    for name, mine, theirs in rows:
        print(f"| {name} | {mine:,.0f} | {theirs:,.0f} | {mine / max(theirs, 1e-9):.2f} |")
    print(f"| idle sockets open | {r.sockets:,} | {bare.sockets:,} | |")
    print(
        f"| server RSS before / after, MiB | {r.rss_before_kib / 1024:.1f} / "
        f"{r.rss_after_kib / 1024:.1f} | {bare.rss_before_kib / 1024:.1f} / "
        f"{bare.rss_after_kib / 1024:.1f} | |"
    )
    print(
        f"| memory per idle socket, KiB | {r.kib_per_socket:.1f} | {bare.kib_per_socket:.1f} | "
        f"{r.kib_per_socket / max(bare.kib_per_socket, 1e-9):.2f} |"
    )
    print(f"| broadcast received by | {r.broadcast_received:,} of {r.sockets:,} sockets | | |")
    print(
        f"| broadcast: first / last socket | {r.broadcast_first_ms:.0f} / "
        f"{r.broadcast_last_ms:.0f} ms | | |"
    )
    failures = (
        r.handshake_failures
        + r.open_failures
        + (r.sockets - r.broadcast_received)
        + bare.handshake_failures
        + bare.open_failures
    )
    if failures:
        print(f"\n{failures} failed handshakes, failed opens or missed broadcasts")
    verdict = "ok" if r.kib_per_socket < TARGET_KIB_PER_SOCKET else "over target"
    print(
        f"\nmemory per paired socket {r.kib_per_socket:.1f} KiB (target < "
        f"{TARGET_KIB_PER_SOCKET:g}): {verdict}; Edge's own share over the bare socket "
        f"{r.kib_per_socket - bare.kib_per_socket:.1f} KiB"
    )
    over = args.check and r.kib_per_socket >= TARGET_KIB_PER_SOCKET
    return 1 if failures or over else 0


if __name__ == "__main__":
    raise SystemExit(main())
