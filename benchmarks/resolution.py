"""Client-resolution cost against the number of trusted networks, beside uvicorn's.

Usage: python benchmarks/resolution.py [--quick] [--check]

Every request is a 3-hop X-Forwarded-For chain (``client, proxy, proxy``) from
a trusted peer, with Host, X-Forwarded-Proto and a few ordinary headers, over
many distinct client addresses (so no cache of per-address answers can help).
The trusted set holds 1, 100 or 10,000 networks of a realistic mix: mostly /32
and /24, a few /16 and IPv6 /64, always including the proxies' /24.

Edge: ``edge.net.resolve`` is called directly (it also decides locality and
records the walk). uvicorn: ``uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware``
is driven through its ASGI ``__call__`` with a fresh scope per request and a
no-op inner app, all requests of one repeat awaited inside one coroutine on one
event loop. Both see the same peers and header lists.

The figure is the median over several repeats of ns per resolution
(``time.perf_counter_ns``); the sizes take turns within each repeat. ``--check`` exits 1 when Edge's 10,000-network cost
exceeds 1.2x its 1-network cost.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from edge.net import NetworkSet, ResolverPolicy, resolve

NETWORK_COUNTS = (1, 100, 10_000)
ALLOWED_RATIO = 1.2
PROXY_NETWORK = "10.1.0.0/24"
PEER = "10.1.0.3"
HOPS = ("10.1.0.7", "10.1.0.5")

Headers = list[tuple[bytes, bytes]]
Request = tuple[tuple[str, int], Headers]


def trusted_networks(count: int, rng: random.Random) -> list[str]:
    """The proxies' /24 plus ``count - 1`` others: 60% /32, 30% /24, 5% /16, 5% v6 /64.

    The fillers come from 11.0.0.0-99.255.255.255 and 2001:db8::/32, away from
    the proxies (10.1.0.0/24) and the clients (150.0.0.0/8, 2001:db9::/32).
    """
    networks = {PROXY_NETWORK}
    while len(networks) < count:
        roll = rng.random()
        if roll < 0.05:
            prefix = rng.getrandbits(32) << 64
            networks.add(str(ipaddress.IPv6Network(((0x20010DB8 << 96) | prefix, 64))))
            continue
        first = rng.randint(11, 99)
        value = (first << 24) | rng.getrandbits(24)
        length = 32 if roll < 0.65 else 24 if roll < 0.95 else 16
        networks.add(str(ipaddress.IPv4Network((value, length), strict=False)))
    return sorted(networks)


def requests(count: int, rng: random.Random) -> list[Request]:
    """Distinct clients (nine in ten IPv4, one in ten IPv6) behind the same two proxies."""
    made: list[Request] = []
    for index in range(count):
        if index % 10 == 9:
            client = str(ipaddress.IPv6Address((0x20010DB9 << 96) | rng.getrandbits(64)))
        else:
            client = str(ipaddress.IPv4Address((150 << 24) | rng.getrandbits(24)))
        headers: Headers = [
            (b"host", b"edge.example.com"),
            (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) benchmark"),
            (b"accept", b"*/*"),
            (b"x-forwarded-for", f"{client}, {HOPS[0]}, {HOPS[1]}".encode()),
            (b"x-forwarded-proto", b"https"),
        ]
        made.append(((PEER, 40000 + index % 20000), headers))
    return made


def time_edge(policy: ResolverPolicy, batch: list[Request]) -> float:
    start = time.perf_counter_ns()
    for peer, headers in batch:
        resolve(peer, headers, policy, scheme="http")
    return (time.perf_counter_ns() - start) / len(batch)


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    return None


async def _noop_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _noop_send(message: Any) -> None:
    return None


def time_uvicorn(entries: list[str], batch: list[Request]) -> float:
    """A fresh middleware per call, so its 4096-entry trust cache starts cold each repeat."""
    middleware: Any = ProxyHeadersMiddleware(_noop_app, trusted_hosts=entries)
    scopes = [
        {"type": "http", "scheme": "http", "client": peer, "headers": headers}
        for peer, headers in batch
    ]

    async def run() -> int:
        start = time.perf_counter_ns()
        for scope in scopes:
            await middleware(scope, _noop_receive, _noop_send)
        return time.perf_counter_ns() - start

    return asyncio.run(run()) / len(batch)


def sanity_check(policy: ResolverPolicy, batch: list[Request]) -> None:
    """Both sides must resolve the same client before their times mean anything."""
    middleware: Any = ProxyHeadersMiddleware(_noop_app, trusted_hosts=[PROXY_NETWORK])
    for peer, headers in batch[:50]:
        ours = resolve(peer, headers, policy).client_ip
        scope: dict[str, Any] = {
            "type": "http",
            "scheme": "http",
            "client": peer,
            "headers": headers,
        }
        asyncio.run(middleware(scope, _noop_receive, _noop_send))
        theirs = str(ipaddress.ip_address(scope["client"][0]))
        if ours != theirs:
            raise SystemExit(f"disagreement on {headers}: edge {ours}, uvicorn {theirs}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and repeats")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 if 10,000 networks cost more than {ALLOWED_RATIO}x one network",
    )
    args = parser.parse_args()
    rng = random.Random(7239)
    edge_batch_size, uvicorn_budget, repeats = (
        (2_000, 50_000_000, 5) if args.quick else (10_000, 300_000_000, 9)
    )
    batch = requests(edge_batch_size, rng)
    trusted = {count: trusted_networks(count, rng) for count in NETWORK_COUNTS}
    policies = {
        count: ResolverPolicy(trusted_proxies=NetworkSet.parse(entries))
        for count, entries in trusted.items()
    }
    sanity_check(policies[1], batch)

    # The sizes take turns within each repeat, so a burst of load from other
    # processes on the machine lands on all of them rather than on one.
    edge_samples: dict[int, list[float]] = {count: [] for count in NETWORK_COUNTS}
    for count in NETWORK_COUNTS:
        time_edge(policies[count], batch)  # warm-up
    for _ in range(repeats):
        for count in NETWORK_COUNTS:
            edge_samples[count].append(time_edge(policies[count], batch))

    uvicorn_samples: dict[int, list[float]] = {count: [] for count in NETWORK_COUNTS}
    uvicorn_batches: dict[int, list[Request]] = {}
    for count in NETWORK_COUNTS:
        # uvicorn's cost grows with the list: size its batch to a time budget.
        probe = time_uvicorn(trusted[count], batch[:100])
        size = max(100, min(len(batch), int(uvicorn_budget / max(probe, 1.0))))
        uvicorn_batches[count] = batch[:size]
    for _ in range(repeats):
        for count in NETWORK_COUNTS:
            uvicorn_samples[count].append(time_uvicorn(trusted[count], uvicorn_batches[count]))

    rows = [
        (
            count,
            statistics.median(edge_samples[count]),
            statistics.median(uvicorn_samples[count]),
        )
        for count in NETWORK_COUNTS
    ]
    base_edge = rows[0][1]
    base_uvicorn = rows[0][2]
    print(
        f"python {platform.python_version()} on {platform.machine()}: {len(batch)} distinct "
        f"clients, median of {repeats} repeats, ns per resolution"
    )
    print(
        f"{'networks':>9}  {'edge ns':>9}  {'x 1-net':>7}  {'uvicorn ns':>11}  {'x 1-net':>7}  {'uvicorn/edge':>12}"
    )
    for count, edge_ns, uvicorn_ns in rows:
        print(
            f"{count:>9,}  {edge_ns:>9,.0f}  {edge_ns / base_edge:>7.2f}  "
            f"{uvicorn_ns:>11,.0f}  {uvicorn_ns / base_uvicorn:>7.2f}  {uvicorn_ns / edge_ns:>12.1f}"
        )
    ratio = rows[-1][1] / base_edge
    if args.check:
        verdict = "ok" if ratio <= ALLOWED_RATIO else "FAIL"
        print(
            f"check: 10,000 networks cost {ratio:.2f}x one network (limit {ALLOWED_RATIO}x): {verdict}"
        )
        return 0 if ratio <= ALLOWED_RATIO else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
