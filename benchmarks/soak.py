"""Minutes of mixed traffic against a real ``edge serve``: no 5xx, no growth in memory or fds.

Usage: python benchmarks/soak.py [--minutes 10] [--workers 1] [--sample 10] [--json FILE]
                                [--memory-detail]

One ``edge serve`` on loopback (127.0.0.1 trusted as its proxy, so a request
with ``X-Forwarded-For`` is a remote client) and a tiny upstream behind it.
Concurrent loops, all bounded by the run's duration:

- HTTP: health, whoami, metrics, upstream forwarding, the device list as a
  paired admin (bearer and session cookie), as a paired user (403), without
  credentials (401), and wrong tokens from throwaway addresses (401, then
  lockouts);
- sockets: paired devices connect, handshake, ask ``self.whoami`` and leave;
  unauthenticated sockets are refused; a set of idle admin dashboards stays
  open the whole run and must keep receiving events;
- pairing: new remote devices ask with the gateway token, an admin approves
  (REST, or ``edge devices approve`` from the CLI) or rejects them; approved
  devices are later revoked while connected and must be closed with 1008;
- ``edge gateway reload`` every 30 s.

Every 10 s the server's RSS and open file descriptors are sampled from
``/proc``; with ``--memory-detail`` the server also samples itself
(``benchmarks/memprobe``: malloc in use and free, Python's blocks, SQLite's
page cache and statements). The report gives counts per kind of traffic,
every unexpected answer, and the least-squares slope of RSS and fds (and of
each ``--memory-detail`` quantity) after the first minute (the warm-up:
caches fill, the allocator settles). It exits 1 on any 5xx,
any unexpected answer, any failed check, or, in a run of at least
``GROWTH_CHECK_MINUTES``, RSS growing faster than ``--max-rss-slope`` KiB a
minute after the warm-up (a bounded cache that fills fills within minutes; a
leak keeps going).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

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
    pair_local_device,
    wait_ready,
)
from edge.pairing.identity import DeviceKey  # noqa: E402

RELOAD_EVERY = 30.0
IDLE_DASHBOARDS = 20
WARM_UP = 60.0
GROWTH_CHECK_MINUTES = 5.0
MAX_RSS_SLOPE_KIB = 64.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's workers when there are several)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                queue.extend(int(c) for c in (task / "children").read_text().split())
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the start of the load
    rss_kib: int
    fds: int


def sample_server(pid: int, started: float) -> Sample:
    rss = fds = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            rss += rss_kib(member)
            fds += fd_count(member)
    return Sample(time.monotonic() - started, rss, fds)


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute; 0 with fewer than two points."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


@dataclass
class SoakReport:
    seconds: float
    workers: int
    counts: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    memory_detail: list[dict[str, Any]] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def warm_up(self) -> float:
        """Seconds left out of the slopes: none in a run shorter than two warm-ups."""
        return WARM_UP if self.seconds >= 2 * WARM_UP else 0.0

    def steady(self) -> list[Sample]:
        """Samples after the warm-up."""
        return [s for s in self.samples if s.at >= self.warm_up]

    @property
    def rss_slope_kib_per_minute(self) -> float:
        return slope_per_minute([(s.at, s.rss_kib) for s in self.steady()])

    @property
    def late_rss_slope_kib_per_minute(self) -> float:
        """The RSS slope over the second half of the run: whether any growth is slowing."""
        half = self.seconds / 2
        return slope_per_minute([(s.at, s.rss_kib) for s in self.samples if s.at >= half])

    @property
    def fd_slope_per_minute(self) -> float:
        return slope_per_minute([(s.at, s.fds) for s in self.steady()])

    def detail_slopes(self) -> dict[str, float]:
        """Per minute after the warm-up, each quantity ``--memory-detail`` sampled (KiB)."""
        if not self.memory_detail:
            return {}
        start = self.memory_detail[0]["at"]
        steady = [line for line in self.memory_detail if line["at"] - start >= self.warm_up]
        names = (
            [k for k in steady[0] if k.endswith("_kib") or k == "python_blocks"] if steady else []
        )
        return {
            name: slope_per_minute([(line["at"], line[name]) for line in steady if name in line])
            for name in names
        }

    def unexpected_answer(self, what: str) -> None:
        if len(self.unexpected) < 200:
            self.unexpected.append(what)
        self.counts["unexpected"] += 1


class Soak:
    """The traffic loops; each runs until ``deadline`` and records into ``report``."""

    def __init__(
        self, edge: EdgeUnderTest, upstream: bool, report: SoakReport, reload_every: float
    ) -> None:
        self.edge = edge
        self.reload_every = reload_every
        self.upstream = upstream
        self.report = report
        self.rng = random.Random(7)
        self.deadline = 0.0
        self.admin_token = ""
        self.user_key = DeviceKey.generate()
        self.user_token = ""
        self.pairing_rounds = 0
        self.http = httpx.AsyncClient(base_url=edge.url, timeout=30, trust_env=False)

    # -- helpers ------------------------------------------------------------------------------

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def remote(self, address: str, token: str | None = None) -> dict[str, str]:
        headers = {"x-forwarded-for": address, "host": "edge.example.com"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return headers

    async def request(
        self, kind: str, method: str, path: str, expected: set[int], **kwargs: Any
    ) -> httpx.Response | None:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.report.unexpected_answer(f"{kind}: {type(exc).__name__}: {exc}")
            return None
        self.report.statuses[response.status_code] += 1
        self.report.counts[f"http {kind}"] += 1
        if response.status_code not in expected:
            self.report.unexpected_answer(f"{kind}: {response.status_code} {response.text[:200]}")
        return response

    async def open_socket(self, address: str) -> ClientConnection:
        return await connect(
            f"ws://127.0.0.1:{self.edge.port}/ws",
            additional_headers=self.remote(address),
            proxy=None,
            open_timeout=30,
            max_size=2**22,
        )

    async def handshake(
        self, address: str, key: DeviceKey, auth: dict[str, str], role: str = "user"
    ) -> tuple[ClientConnection, dict[str, Any]]:
        """Open, answer the challenge, and return the reply (``{"type": "closed"}`` if none)."""
        ws = await self.open_socket(address)
        challenge = json.loads(await asyncio.wait_for(ws.recv(), 30))
        await ws.send(connect_frame(key, challenge["nonce"], auth, role))
        try:
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
        except ConnectionClosed:
            reply = {"type": "closed"}
        return ws, reply

    async def close_reason(self, ws: ClientConnection) -> tuple[int | None, str | None]:
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        return ws.close_code, ws.close_reason

    # -- set-up -------------------------------------------------------------------------------

    async def pair_remote(
        self, address: str, role: str, via_cli: bool = False
    ) -> tuple[DeviceKey, str] | None:
        """Ask as a new remote device, have it approved, connect again: its key and token."""
        key = DeviceKey.generate()
        ws, reply = await self.handshake(address, key, {"token": TOKEN}, role)
        close = await self.close_reason(ws)
        if reply.get("code") != "PAIRING_REQUIRED" or close != (1008, "pairing required"):
            self.report.unexpected_answer(f"pairing request: {reply} {close}")
            return None
        request_id = reply["requestId"]
        if via_cli:
            approve = ("devices", "approve", request_id, "--role", role)
            await asyncio.to_thread(self.edge.cli, *approve)
            self.report.counts["approvals (cli)"] += 1
        else:
            response = await self.request(
                "approve",
                "POST",
                f"/api/requests/{request_id}/approve",
                {200},
                headers=self.remote("192.0.2.1", self.admin_token),
                json={"role": role},  # admin is granted only when named
            )
            if response is None or response.status_code != 200:
                return None
            self.report.counts["approvals (rest)"] += 1
        ws, hello = await self.handshake(address, key, {"token": TOKEN}, role)
        await ws.close()
        if hello.get("type") != "hello":
            self.report.unexpected_answer(f"after approval: {hello}")
            return None
        return key, str(hello["deviceToken"])

    async def set_up(self) -> None:
        _key, self.admin_token = await asyncio.to_thread(pair_local_device, self.edge.port)
        user = await self.pair_remote("192.0.2.2", "user", via_cli=True)
        if user is None:
            raise SystemExit(f"could not pair the soak's user device: {self.report.unexpected}")
        self.user_key, self.user_token = user

    # -- the loops ----------------------------------------------------------------------------

    async def repeat(self, name: str, step: Any) -> None:
        """Run ``step`` until the deadline; a failure is recorded and the loop goes on."""
        while self.running():
            try:
                await step()
            except (
                OSError,
                ConnectionClosed,
                TimeoutError,
                ValueError,
                KeyError,
                RuntimeError,
            ) as exc:
                self.report.unexpected_answer(f"{name}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

    async def http_step(self) -> None:
        choice = self.rng.randrange(10)
        admin, user = self.admin_token, self.user_token
        if choice == 0:
            await self.request("health", "GET", "/healthz", {200})
        elif choice == 1:
            await self.request(
                "whoami", "GET", "/api/whoami", {200}, headers=self.remote("192.0.2.3")
            )
        elif choice == 2:
            await self.request("metrics", "GET", "/metrics", {200})
        elif choice == 3 and self.upstream:
            await self.request(
                "upstream",
                "GET",
                "/svc/healthz",
                {200},
                headers=self.remote("192.0.2.1", admin),
            )
        elif choice in (3, 4):
            await self.request(
                "admin list",
                "GET",
                "/api/devices",
                {200},
                headers=self.remote("192.0.2.1", admin),
            )
        elif choice == 5:
            await self.request(
                "user forbidden",
                "GET",
                "/api/devices",
                {403},
                headers=self.remote("192.0.2.2", user),
            )
        elif choice == 6:
            await self.request(
                "no credentials", "GET", "/api/devices", {401}, headers=self.remote("192.0.2.4")
            )
        elif choice == 7:
            address = f"198.51.100.{self.rng.randrange(1, 255)}"
            await self.request(
                "wrong token",
                "GET",
                "/api/devices",
                {401},
                headers=self.remote(address, "not-a-device-token-" + str(self.rng.random())),
            )
        else:
            await self.session_round()

    async def session_round(self) -> None:
        """Trade the admin token for a session cookie and use it, as the dashboard does."""
        async with httpx.AsyncClient(base_url=self.edge.url, timeout=30, trust_env=False) as http:
            with contextlib.suppress(httpx.HTTPError):
                made = await http.post(
                    "/api/session", headers=self.remote("192.0.2.1", self.admin_token)
                )
                self.report.statuses[made.status_code] += 1
                used = await http.get("/api/devices", headers=self.remote("192.0.2.1"))
                self.report.statuses[used.status_code] += 1
                self.report.counts["http session"] += 2
                if (made.status_code, used.status_code) != (200, 200):
                    self.report.unexpected_answer(
                        f"session: {made.status_code} then {used.status_code}"
                    )
                return
            self.report.unexpected_answer("session: connection failed")

    async def socket_step(self) -> None:
        if self.rng.random() < 0.2:
            ws, reply = await self.handshake("192.0.2.5", DeviceKey.generate(), {})
            close = await self.close_reason(ws)
            self.report.counts["socket refused"] += 1
            if close != (1008, "unauthorized: gateway token missing"):
                self.report.unexpected_answer(f"anonymous socket: {reply} {close}")
            return
        # the paired user device reconnects with its device token
        ws, hello = await self.handshake(
            "192.0.2.2", self.user_key, {"deviceToken": self.user_token}
        )
        try:
            if hello.get("type") != "hello":
                self.report.unexpected_answer(f"reconnect: {hello}")
                return
            await ws.send(json.dumps({"type": "req", "id": 1, "method": "self.whoami"}))
            res = json.loads(await asyncio.wait_for(ws.recv(), 30))
            while res.get("type") == "event":
                # The device's own events may come first: the token_rotated of its pairing
                # reaches this socket if the event watcher runs after the socket is admitted.
                res = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if res.get("type") != "res" or not res.get("ok"):
                self.report.unexpected_answer(f"self.whoami: {res}")
            self.report.counts["socket sessions"] += 1
        finally:
            await ws.close()

    async def dashboard(self, index: int) -> None:
        """An idle admin socket: it stays open and counts the events it receives."""
        address = f"192.0.2.{100 + index}"
        paired = await self.pair_remote(address, "admin")
        if paired is None:
            return
        key, device_token = paired
        ws, hello = await self.handshake(address, key, {"deviceToken": device_token}, "admin")
        if hello.get("type") != "hello":
            self.report.unexpected_answer(f"dashboard {index}: {hello}")
            await ws.close()
            return
        try:
            while self.running():
                with contextlib.suppress(TimeoutError):
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                    if frame.get("type") == "event":
                        self.report.counts["dashboard events"] += 1
        except ConnectionClosed:
            self.report.unexpected_answer(
                f"dashboard {index} closed: {ws.close_code} {ws.close_reason}"
            )
        finally:
            await ws.close()

    async def pairing_step(self) -> None:
        """A new device: approved (REST or CLI) or rejected; approved ones revoked while connected."""
        self.pairing_rounds += 1
        round_index = self.pairing_rounds
        address = f"203.0.113.{round_index % 250 + 1}"
        key = DeviceKey.generate()
        ws, reply = await self.handshake(address, key, {"token": TOKEN})
        close = await self.close_reason(ws)
        request_id = reply.get("requestId")
        if reply.get("code") != "PAIRING_REQUIRED" or request_id is None:
            self.report.unexpected_answer(f"pairing loop ask: {reply} {close}")
            await asyncio.sleep(1)
            return
        if round_index % 4 == 0:
            await self.request(
                "reject",
                "POST",
                f"/api/requests/{request_id}/reject",
                {200},
                headers=self.remote("192.0.2.1", self.admin_token),
            )
            self.report.counts["rejections"] += 1
            return
        if round_index % 5 == 0:
            await asyncio.to_thread(self.edge.cli, "devices", "approve", request_id)
            self.report.counts["approvals (cli)"] += 1
        else:
            await self.request(
                "approve",
                "POST",
                f"/api/requests/{request_id}/approve",
                {200},
                headers=self.remote("192.0.2.1", self.admin_token),
                json={},
            )
            self.report.counts["approvals (rest)"] += 1
        ws, hello = await self.handshake(address, key, {"token": TOKEN})
        if hello.get("type") != "hello":
            self.report.unexpected_answer(f"pairing loop hello: {hello}")
            await ws.close()
            return
        await self.request(
            "revoke",
            "POST",
            f"/api/devices/{hello['device']['id']}/revoke",
            {200},
            headers=self.remote("192.0.2.1", self.admin_token),
        )
        code, reason = await self.close_reason(ws)
        self.report.counts["revocations"] += 1
        if (code, reason) != (1008, "device revoked"):
            self.report.unexpected_answer(f"revoked socket closed with {code} {reason!r}")
        await asyncio.sleep(0.5)

    async def reload_loop(self) -> None:
        while self.running():
            await asyncio.sleep(min(self.reload_every, max(0.0, self.deadline - time.monotonic())))
            if not self.running():
                return
            await asyncio.to_thread(self.edge.cli, "gateway", "reload")
            self.report.counts["reloads"] += 1

    async def sampler(self, started: float, every: float) -> None:
        pid = self.edge.proc.pid
        while True:
            self.report.samples.append(sample_server(pid, started))
            if not self.running():
                return
            await asyncio.sleep(min(every, max(0.0, self.deadline - time.monotonic())))

    async def run(self, seconds: float, sample_every: float, http_loops: int) -> None:
        await self.set_up()
        started = time.monotonic()
        self.deadline = started + seconds
        loops = [
            *(self.repeat("http", self.http_step) for _ in range(http_loops)),
            self.repeat("socket", self.socket_step),
            self.repeat("pairing", self.pairing_step),
            self.reload_loop(),
            *(self.dashboard(i) for i in range(IDLE_DASHBOARDS)),
        ]
        try:
            await asyncio.gather(self.sampler(started, sample_every), *loops)
        finally:
            await self.http.aclose()
        self.report.seconds = time.monotonic() - started


def run_soak(
    seconds: float,
    *,
    workers: int = 1,
    sample_every: float = 10.0,
    http_loops: int = 4,
    reload_every: float = RELOAD_EVERY,
    tmp: Path | None = None,
    memory_detail: bool = False,
) -> SoakReport:
    """Start Edge and an upstream, drive the traffic for ``seconds``, stop them, report."""
    with contextlib.ExitStack() as stack:
        if tmp is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-soak-")))
        upstream_port = free_port()
        upstream = stack.enter_context(
            managed(
                [
                    sys.executable,
                    str(REPO / "benchmarks" / "http_stack.py"),
                    "--serve-bare",
                    str(upstream_port),
                ],
                tmp / "upstream.log",
                cwd=REPO,
                env=clean_env(),
            )
        )
        wait_ready(f"http://127.0.0.1:{upstream_port}/healthz", upstream)
        env = clean_env()
        probe_out = tmp / "memprobe.jsonl"
        if memory_detail:
            env["PYTHONPATH"] += os.pathsep + str(REPO / "benchmarks" / "memprobe")
            env["BENCH_MEMPROBE_OUT"] = str(probe_out)
            env["BENCH_MEMPROBE_EVERY"] = str(sample_every)
        edge = stack.enter_context(
            edge_serve(
                tmp,
                env,
                server={"workers": workers},
                upstreams=[
                    {
                        "prefix": "/svc/",
                        "share_control_origin": True,
                        "url": f"http://127.0.0.1:{upstream_port}",
                        "strip_prefix": True,
                    }
                ],
            )
        )
        report = SoakReport(seconds=seconds, workers=workers)
        soak = Soak(edge, True, report, reload_every)
        asyncio.run(soak.run(seconds, sample_every, http_loops))
        if edge.proc.poll() is not None:
            report.unexpected_answer(f"edge serve exited with {edge.proc.returncode}")
        if memory_detail:
            if not probe_out.exists():
                raise SystemExit("--memory-detail: the server wrote no samples (see memprobe)")
            lines = probe_out.read_text().splitlines()
            report.memory_detail = [json.loads(line) for line in lines if line.strip()]
    return report


def render(report: SoakReport) -> str:
    first, last = report.samples[0], report.samples[-1]
    steady = report.steady()
    lines = [
        f"{machine_line()}; {report.workers} worker(s); {report.seconds / 60:.1f} minutes",
        "",
        "| traffic | count |",
        "|---------|------:|",
        *(f"| {name} | {n:,} |" for name, n in sorted(report.counts.items())),
        "",
        "HTTP statuses: "
        + ", ".join(f"{status}: {n:,}" for status, n in sorted(report.statuses.items())),
        f"5xx answers: {report.server_errors}",
        "",
        f"RSS: {first.rss_kib / 1024:.1f} MiB at start, {steady[0].rss_kib / 1024:.1f} MiB after "
        f"warm-up, {last.rss_kib / 1024:.1f} MiB at the end; slope after warm-up "
        f"{report.rss_slope_kib_per_minute:+.1f} KiB/min (second half of the run "
        f"{report.late_rss_slope_kib_per_minute:+.1f} KiB/min)",
        f"fds: {first.fds} at start, {steady[0].fds} after warm-up, {last.fds} at the end, "
        f"max {max(s.fds for s in report.samples)}; slope after warm-up "
        f"{report.fd_slope_per_minute:+.2f}/min",
        "samples (s, RSS KiB, fds): "
        + " ".join(f"{s.at:.0f}/{s.rss_kib}/{s.fds}" for s in report.samples),
    ]
    slopes = report.detail_slopes()
    if slopes:
        last_detail = report.memory_detail[-1]
        lines += ["", "| inside the server | at the end | slope after warm-up, per minute |"]
        lines += ["|---|---:|---:|"]
        lines += [
            f"| {name} | {last_detail.get(name, 0):,} | {slope:+,.1f} |"
            for name, slope in slopes.items()
        ]
        lines.append(f"sqlite connections: {last_detail.get('sqlite_connections', '?')}")
    if report.unexpected:
        lines += ["", f"{report.counts['unexpected']} unexpected answers, first ones:"]
        lines += [f"  {what}" for what in report.unexpected[:20]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--quick", action="store_true", help="one minute, samples every 5 s")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument(
        "--max-rss-slope",
        type=float,
        default=MAX_RSS_SLOPE_KIB,
        help=f"KiB/min of RSS growth after the warm-up that fails a run of "
        f"{GROWTH_CHECK_MINUTES:g}+ minutes",
    )
    parser.add_argument(
        "--memory-detail",
        action="store_true",
        help="the server also samples its malloc heap, Python blocks and SQLite caches",
    )
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.sample = 1.0, 5.0
    report = run_soak(
        args.minutes * 60,
        workers=args.workers,
        sample_every=args.sample,
        memory_detail=args.memory_detail,
    )
    print(render(report))
    if args.json is not None:
        data = {
            "seconds": report.seconds,
            "workers": report.workers,
            "counts": dict(report.counts),
            "statuses": {str(k): v for k, v in report.statuses.items()},
            "server_errors": report.server_errors,
            "unexpected": report.unexpected,
            "samples": [asdict(sample) for sample in report.samples],
            "rss_slope_kib_per_minute": report.rss_slope_kib_per_minute,
            "late_rss_slope_kib_per_minute": report.late_rss_slope_kib_per_minute,
            "fd_slope_per_minute": report.fd_slope_per_minute,
            "memory_detail": report.memory_detail,
            "memory_detail_slopes": report.detail_slopes(),
        }
        args.json.write_text(json.dumps(data, indent=2))
    growing = (
        args.minutes >= GROWTH_CHECK_MINUTES
        and report.rss_slope_kib_per_minute > args.max_rss_slope
    )
    if growing:
        print(
            f"\nFAIL: RSS grew {report.rss_slope_kib_per_minute:+.1f} KiB/min after the warm-up, "
            f"more than {args.max_rss_slope:g}; run again with --memory-detail to see where"
        )
    return 1 if report.server_errors or report.unexpected or growing else 0


if __name__ == "__main__":
    raise SystemExit(main())
