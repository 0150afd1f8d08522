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

``--quick`` uses 1,000 sockets and 3 s of handshakes. The file-descriptor
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
    connect_frame,
    edge_serve,
    machine_line,
    server_cpu_seconds,
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


def idle_client(credentials: Credentials, index: int, count: int, pipe: Connection) -> None:
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

        waiting = [asyncio.create_task(wait_event(ws)) for ws in sockets]
        await asyncio.wait(waiting, timeout=120)
        pipe.send(("event", received))
        await asyncio.to_thread(pipe.recv)  # "close"
        for task in waiting:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        pipe.send(("closed",))

    asyncio.run(main())


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
    handshakes_per_second: float
    handshakes_per_cpu_second: float
    handshake_failures: int
    sockets: int
    open_failures: int
    kib_per_socket: float
    rss_before_kib: int
    rss_after_kib: int
    broadcast_first_ms: float
    broadcast_last_ms: float
    broadcast_received: int


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


def measure_idle_and_broadcast(
    edge: EdgeUnderTest, credentials: Credentials, clients: int, sockets: int
) -> tuple[int, int, int, int, list[float], float]:
    context = multiprocessing.get_context("fork")
    pid = edge.proc.pid
    time.sleep(1.0)
    before = server_rss_kib(pid)
    pipes, processes = [], []
    share = [sockets // clients + (1 if i < sockets % clients else 0) for i in range(clients)]
    for index, count in enumerate(share):
        parent, child = context.Pipe()
        process = context.Process(target=idle_client, args=(credentials, 100 + index, count, child))
        process.start()
        pipes.append(parent)
        processes.append(process)
    opened = [pipe.recv() for pipe in pipes]
    time.sleep(2.0)  # let the server settle (buffers, the allocator)
    after = server_rss_kib(pid)
    # The broadcast: a new device asks to pair; every admin socket gets pairing.requested.
    newcomer = DeviceKey.generate()

    async def ask() -> float:
        ws = await connect(
            f"ws://127.0.0.1:{edge.port}/ws",
            additional_headers={"X-Forwarded-For": "10.254.0.1"},
            proxy=None,
        )
        challenge = json.loads(await ws.recv())
        sent_at = time.monotonic()
        await ws.send(connect_frame(newcomer, challenge["nonce"], {"token": TOKEN}, "user"))
        with contextlib.suppress(Exception):
            await ws.recv()
        await ws.close()
        return sent_at

    sent_at = asyncio.run(ask())
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
    total = sum(o[1] for o in opened)
    failures = sum(o[2] for o in opened)
    return total, failures, before, after, [t - sent_at for t in received], sent_at


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
    args = parser.parse_args()
    if args.quick:
        args.sockets, args.duration = 1_000, 3.0
    limit = raise_fd_limit()
    if limit < args.sockets + 200:
        raise SystemExit(f"the descriptor limit is {limit}; {args.sockets} sockets need more")
    with (
        tempfile.TemporaryDirectory(prefix="edge-bench-ws-") as directory,
        edge_serve(Path(directory)) as edge,
    ):
        credentials = pair_admin(edge)
        rate, per_cpu, handshake_failures = measure_handshakes(
            credentials, edge.proc.pid, min(args.clients, 2), args.duration
        )
        total, open_failures, before, after, delays, _ = measure_idle_and_broadcast(
            edge, credentials, args.clients, args.sockets
        )
    results = Results(
        handshakes_per_second=rate,
        handshakes_per_cpu_second=per_cpu,
        handshake_failures=handshake_failures,
        sockets=total,
        open_failures=open_failures,
        kib_per_socket=(after - before) / max(total, 1),
        rss_before_kib=before,
        rss_after_kib=after,
        broadcast_first_ms=1000 * min(delays) if delays else float("nan"),
        broadcast_last_ms=1000 * max(delays) if delays else float("nan"),
        broadcast_received=len(delays),
    )
    return report(results, args)


def report(r: Results, args: argparse.Namespace) -> int:
    print(f"{machine_line()}; one edge serve worker; {args.clients} client processes")
    print()
    print("| measure | value |")
    print("|---------|------:|")
    print(
        f"| full handshakes per second (clients on the same 2 cores) | {r.handshakes_per_second:,.0f} |"
    )
    print(f"| full handshakes per second of server CPU | {r.handshakes_per_cpu_second:,.0f} |")
    print(f"| idle paired sockets open | {r.sockets:,} |")
    print(
        f"| server RSS before / after | {r.rss_before_kib / 1024:.1f} / {r.rss_after_kib / 1024:.1f} MiB |"
    )
    print(f"| memory per idle paired socket | {r.kib_per_socket:.1f} KiB |")
    print(f"| broadcast received by | {r.broadcast_received:,} of {r.sockets:,} sockets |")
    print(
        f"| broadcast: first / last socket | {r.broadcast_first_ms:.0f} / {r.broadcast_last_ms:.0f} ms |"
    )
    failures = r.handshake_failures + r.open_failures + (r.sockets - r.broadcast_received)
    if failures:
        print(f"\n{failures} failed handshakes, failed opens or missed broadcasts")
    verdict = "ok" if r.kib_per_socket < TARGET_KIB_PER_SOCKET else "over target"
    print(
        f"\nmemory per socket {r.kib_per_socket:.1f} KiB (target < {TARGET_KIB_PER_SOCKET:g}): {verdict}"
    )
    over = args.check and r.kib_per_socket >= TARGET_KIB_PER_SOCKET
    return 1 if failures or over else 0


if __name__ == "__main__":
    raise SystemExit(main())
