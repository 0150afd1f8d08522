"""The pairing store's hot operations on SQLite and on Redis, in one run.

Usage: python benchmarks/store.py [--quick]

Backends: the SQLite store (WAL, synchronous=FULL) on a temporary file, and
the Redis store on a ``redis-server`` this script starts on 127.0.0.1 (append-
only file, no snapshots) twice: with ``appendfsync everysec`` and with
``appendfsync always``. Each is measured with the same operations through
``PairingService``, as the gateway calls them:

- approve: ``service.approve`` of a pending request (one atomic take, device
  written, event appended); operations per second, one thread, then 4 threads.
- record failure: ``service.record_failure`` (the lockout counter under brute
  force); operations per second.
- token, uncached: ``service.authenticate_token`` with the in-memory token
  cache emptied before each call, i.e. the store lookup a request pays every
  30 s per token (or after any change to the device); microseconds per call.
- token, cached: the same call on a warm cache, which is what nearly every
  request pays; microseconds per call (no store access).
- event seen: from a change committed by one store handle to ``wait_events``
  of another returning it (how fast another worker or replica learns of an
  approval or revocation); median milliseconds.

Figures are medians over repeats; ops/s are derived from the median time.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from edge.pairing.codes import new_request_id
from edge.pairing.models import Device, Event, PairingRequest, Role
from edge.pairing.service import PairingPolicy, PairingService, RateLimitPolicy
from edge.pairing.store import Store, open_store
from edge.pairing.tokens import generate_secret, hash_secret

GATEWAY_TOKEN = "benchmark-gateway-token-0123456789abcdef"
POLICY = PairingPolicy(
    max_pending=1_000_000,
    max_pending_per_client=1_000_000,
    rate_limit=RateLimitPolicy(failures=1_000_000, window=3600, lockout=1),
)


@contextlib.contextmanager
def redis_server(directory: Path, appendfsync: str) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/install-test-deps installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory.mkdir(parents=True)
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        for _ in range(200):
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    break
            time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def device(number: int) -> Device:
    return Device(
        id=f"{number:064x}",
        public_key=f"key-{number}",
        name=f"device {number}",
        role=Role.USER,
        status="paired",
        token_hash=None,
        created_at=time.time(),
        approved_by="benchmark",
    )


def open_requests(store: Store, first: int, count: int) -> list[str]:
    now = time.time()
    ids = []
    for number in range(first, first + count):
        request = PairingRequest(
            id=new_request_id(),
            device_id=f"{number:064x}",
            public_key=f"key-{number}",
            name=f"device {number}",
            client_ip=f"198.51.{number // 250 % 250}.{number % 250}",
            user_agent="benchmark",
            role=Role.USER,
            reason="not-paired",
            created_at=now,
            expires_at=now + 3600,
        )
        opened = store.open_request(request, max_pending=10**6, max_pending_per_client=10**6)
        assert isinstance(opened, PairingRequest)
        ids.append(opened.id)
    return ids


def seconds(action: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        action()
    return time.perf_counter() - started


class Bench:
    def __init__(self, url: str, data_dir: Path, quick: bool) -> None:
        self.store = open_store(url, data_dir)
        self.other = open_store(url, data_dir)
        self.service = PairingService(self.store, GATEWAY_TOKEN, POLICY)
        self.repeats = 3 if quick else 5
        self.batch = 100 if quick else 400
        self.numbers = iter(range(1, 10**9))

    def close(self) -> None:
        self.store.close()
        self.other.close()

    def approve_rate(self, threads: int) -> float:
        samples = []
        for _ in range(self.repeats):
            first = next(self.numbers) * 100_000
            ids = open_requests(self.store, first, self.batch)
            chunks = [ids[n::threads] for n in range(threads)]

            def work(chunk: list[str]) -> None:
                for request_id in chunk:
                    self.service.approve(request_id, actor="benchmark")

            workers = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
            started = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            samples.append(time.perf_counter() - started)
        return self.batch / statistics.median(samples)

    def failure_rate(self) -> float:
        client = f"203.0.113.{next(self.numbers) % 250}"
        samples = [
            seconds(lambda: self.service.record_failure(client), self.batch)
            for _ in range(self.repeats)
        ]
        return self.batch / statistics.median(samples)

    def token_cost(self, cached: bool) -> float:
        paired = replace(device(next(self.numbers) * 100_000), token_hash=None)
        token = generate_secret()
        self.store.pair_device(
            replace(paired, token_hash=hash_secret(token)), actor="benchmark", now=time.time()
        )
        # What the gateway does when another process changes the device: forget it.
        changed = [Event(seq=0, type="device.renamed", data={"device_id": paired.id}, at=0.0)]

        def verify() -> None:
            if not cached:
                self.service.apply_events(changed)
            verified = self.service.authenticate_token(token)
            assert isinstance(verified, Device) and verified.id == paired.id

        verify()
        count = self.batch * (20 if cached else 2)
        samples = [seconds(verify, count) for _ in range(self.repeats)]
        return statistics.median(samples) / count * 1e6

    def event_latency(self) -> float:
        samples = []
        for _ in range(self.repeats * 4):
            seen: list[float] = []
            waiter = threading.Thread(target=self._wait_once, args=(self.other.latest_seq(), seen))
            waiter.start()
            time.sleep(0.02)  # let the waiter block first
            started = time.perf_counter()
            self.store.pair_device(device(next(self.numbers) * 100_000), actor="b", now=time.time())
            waiter.join()
            samples.append(seen[0] - started)
        return statistics.median(samples) * 1000

    def _wait_once(self, after: int, seen: list[float]) -> None:
        self.other.wait_events(after, 10)
        seen.append(time.perf_counter())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations and repeats")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="edge-store-bench-"))
    rows = []
    try:
        with (
            redis_server(workdir / "everysec", "everysec") as everysec,
            redis_server(workdir / "always", "always") as always,
        ):
            backends = [
                ("sqlite (synchronous=FULL)", f"sqlite:///{workdir / 'edge.sqlite3'}"),
                ("redis (appendfsync everysec)", everysec),
                ("redis (appendfsync always)", always),
            ]
            for name, url in backends:
                bench = Bench(url, workdir, args.quick)
                try:
                    rows.append(
                        (
                            name,
                            bench.approve_rate(1),
                            bench.approve_rate(4),
                            bench.failure_rate(),
                            bench.token_cost(cached=False),
                            bench.token_cost(cached=True),
                            bench.event_latency(),
                        )
                    )
                finally:
                    bench.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{'quick' if args.quick else 'full'} run, medians"
    )
    header = (
        f"{'backend':<30} {'approve/s':>9} {'approve/s x4':>12} {'failures/s':>10} "
        f"{'token us (uncached)':>19} {'token us (cached)':>17} {'event seen ms':>13}"
    )
    print(header)
    for name, one, four, failures, uncached, cached, latency in rows:
        print(
            f"{name:<30} {one:>9,.0f} {four:>12,.0f} {failures:>10,.0f} "
            f"{uncached:>19,.1f} {cached:>17,.1f} {latency:>13,.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
