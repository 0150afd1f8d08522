"""Routing among Edge's routes: Starlette's ``Router`` beside Edge's ``SkippingRouter``.

Usage: python benchmarks/routing.py [--quick] [--requests 20000] [--repeats 5]

Both routers get the route list of ``create_app`` with one upstream (``/svc/``),
so a forwarded request is routed past every route of Edge's own, as in the
real server. Each route's ``handle`` is replaced by a no-op, so only finding
the route is timed; a 404 runs Starlette's not-found response in both. Rows:
µs per request, the fastest of ``--repeats`` batches of ``--requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from starlette.routing import BaseRoute, Router  # noqa: E402

from benchmarks.http_stack import TOKEN, machine_line  # noqa: E402
from edge import create_app  # noqa: E402
from edge.gateway.routing import SkippingRouter  # noqa: E402

REQUESTS = [
    ("GET", "/healthz", "a literal route, fourth of Edge's"),
    ("GET", "/api/whoami", "a literal route, third"),
    ("POST", "/api/devices/d1/revoke", "a route with a parameter"),
    ("GET", "/api/devices/d1/revoke", "the same with the wrong method (405)"),
    ("GET", "/svc/some/page", "forwarded to the upstream, after every route"),
    ("GET", "/nowhere", "no route (404)"),
]


async def _handled(scope: Any, receive: Any, send: Any) -> None:
    return None


def edge_routes(data_dir: Path) -> list[BaseRoute]:
    app = create_app(
        {
            "data_dir": str(data_dir),
            "auth": {"token": TOKEN},
            "upstreams": [{"prefix": "/svc/", "share_control_origin": True, "url": "http://127.0.0.1:9"}],
        }
    )
    routes = list(app.router.routes)
    for route in routes:
        route.handle = _handled  # type: ignore[method-assign]
    app.state.gateway.service.store.close()
    return routes


def time_router(router: Router, method: str, path: str, requests: int, repeats: int) -> float:
    async def batch() -> float:
        started = time.perf_counter()
        for _ in range(requests):
            scope = {
                "type": "http",
                "method": method,
                "path": path,
                "root_path": "",
                "headers": [],
                "query_string": b"",
                "scheme": "http",
                "server": ("127.0.0.1", 80),
            }
            await router.app(scope, _receive, _send)
        return time.perf_counter() - started

    return min(asyncio.run(batch()) for _ in range(repeats)) / requests * 1e6


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 requests, 3 repeats")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.repeats = 5_000, 3
    with tempfile.TemporaryDirectory(prefix="edge-bench-routing-") as directory:
        routes = edge_routes(Path(directory) / "data")
    starlette_router, skipping_router = Router(routes), SkippingRouter(routes)
    print(
        f"{machine_line()}; {len(routes)} routes; fastest of {args.repeats} batches of "
        f"{args.requests:,} requests"
    )
    print()
    print("| request | what it is | Starlette µs | Edge µs |")
    print("|---------|------------|-------------:|--------:|")
    for method, path, what in REQUESTS:
        plain = time_router(starlette_router, method, path, args.requests, args.repeats)
        skipping = time_router(skipping_router, method, path, args.requests, args.repeats)
        print(f"| {method} {path} | {what} | {plain:.2f} | {skipping:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
