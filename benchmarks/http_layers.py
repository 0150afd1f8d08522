"""Where an HTTP request's time goes inside Edge: each layer's cost, in process, beside a bare app.

Usage: python benchmarks/http_layers.py [--quick] [--requests 20000] [--repeats 7]

``http_stack.py`` measures whole servers under load; this one calls the ASGI
apps directly (no sockets, no uvicorn) to split Edge's share of a request
into its layers. Every request is the one ``http_stack.py`` sends: ``GET
/healthz`` from a trusted proxy (127.0.0.1) with ``X-Forwarded-For`` and the
bearer token of a paired device. Rows, each the fastest of ``--repeats``
batches of ``--requests`` requests (the least disturbed by other processes):

- bare app: a Starlette app with the one route (as in ``http_stack.py``);
- bare router: its router alone, without Starlette's error middlewares;
- edge router: Edge's router, with the resolution and the credentials
  already in the scope (what routing among Edge's routes costs);
- resolution: ``ClientResolutionMiddleware`` in front of a no-op app;
- guard: ``GuardMiddleware`` (credential check, refusal, metrics) in front of a
  no-op app, the resolution already in the scope;
- edge app: the whole of ``create_app``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.http_stack import (  # noqa: E402
    CLIENT_IP,
    PATH,
    TOKEN,
    bare_app,
    connect_frame,
    machine_line,
)
from edge import create_app  # noqa: E402
from edge.gateway.context import AUTH_KEY, RESOLUTION_KEY  # noqa: E402
from edge.gateway.guard import (  # noqa: E402
    Authenticator,
    ClientResolutionMiddleware,
    GuardMiddleware,
)
from edge.net import resolve  # noqa: E402
from edge.pairing.identity import DeviceKey  # noqa: E402

Scope = MutableMapping[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]


async def _noop(scope: Scope, receive: Any, send: Any) -> None:
    return None


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: MutableMapping[str, Any]) -> None:
    return None


def pair_device(app: Any) -> str:
    """A device paired as a local admin over the control socket; its device token."""
    with warnings.catch_warnings():  # the test client's notice about httpx, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        from starlette.testclient import TestClient

    key = DeviceKey.generate()
    with (
        TestClient(app, client=("127.0.0.1", 40000), base_url="http://127.0.0.1") as client,
        client.websocket_connect("/ws", headers={"host": "127.0.0.1"}) as ws,
    ):
        challenge = ws.receive_json()
        ws.send_text(connect_frame(key, challenge["nonce"], {}, "admin"))
        hello = ws.receive_json()
    if hello.get("type") != "hello":
        raise SystemExit(f"could not pair the benchmark device: {hello}")
    return str(hello["deviceToken"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 requests, 5 repeats")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.repeats = 5_000, 5
    with tempfile.TemporaryDirectory(prefix="edge-bench-layers-") as directory:
        app = create_app(
            {
                "data_dir": str(Path(directory) / "data"),
                "auth": {"token": TOKEN},
                "proxy": {"trusted_proxies": ["127.0.0.1"]},
                "logging": {"level": "warning"},
                # The test client's connection has no owner the kernel could name, so under
                # the default uid rule no in-process client is local and none could pair.
                "local": {"peer_check": "address"},
            }
        )
        token = pair_device(app)
        rows = asyncio.run(measure(app, token, args.requests, args.repeats))
        app.state.gateway.service.store.close()
    return report(rows, args)


async def measure(app: Any, token: str, requests: int, repeats: int) -> dict[str, float]:
    gateway = app.state.gateway
    headers = [
        (b"host", b"edge.example.com"),
        (b"x-forwarded-for", CLIENT_IP.encode()),
        (b"authorization", f"Bearer {token}".encode()),
    ]

    def scope() -> Scope:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": list(headers),
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 18789),
            "state": {},
        }

    resolution = resolve(("127.0.0.1", 40000), headers, gateway.live.config.policy)
    authenticate = Authenticator(gateway.service, gateway.blocking)
    auth = await authenticate({**scope(), RESOLUTION_KEY: resolution})
    if auth.state != "paired" or resolution.local or resolution.client_ip != CLIENT_IP:
        raise SystemExit(f"Edge does not see a paired remote client: {auth}, {resolution}")

    def resolved() -> Scope:
        return {**scope(), RESOLUTION_KEY: resolution}

    def routed() -> Scope:
        return {**scope(), RESOLUTION_KEY: resolution, AUTH_KEY: auth}

    bare = bare_app()
    layers: dict[str, tuple[App, Callable[[], Scope]]] = {
        "bare app": (bare, scope),
        "bare router": (bare.router, scope),
        "edge router": (app.router, routed),
        "resolution": (
            ClientResolutionMiddleware(
                _noop, live=gateway.live, metrics=gateway.metrics, warner=gateway.warner
            ),
            scope,
        ),
        "guard": (
            GuardMiddleware(
                _noop,
                authenticate=authenticate,
                live=gateway.live,
                metrics=gateway.metrics,
                settings=gateway.settings,
            ),
            resolved,
        ),
        "edge app": (app, scope),
        "no-op": (_noop, scope),
    }
    for layer, make in layers.values():  # warm caches and the resolution memo
        for _ in range(200):
            await layer(make(), _receive, _send)
    best = {name: float("inf") for name in layers}
    for _ in range(repeats):
        for name, (layer, make) in layers.items():
            started = time.perf_counter()
            for _ in range(requests):
                await layer(make(), _receive, _send)
            best[name] = min(best[name], (time.perf_counter() - started) / requests * 1e6)
    return best


def report(rows: dict[str, float], args: argparse.Namespace) -> int:
    floor = rows.pop("no-op")  # building the scope dict and the loop itself
    print(
        f"{machine_line()}; in process, no server; fastest of {args.repeats} batches of "
        f"{args.requests:,} requests; the cost of making each scope ({floor:.1f} µs) taken off"
    )
    print()
    print("| layer | µs per request |")
    print("|-------|---------------:|")
    for name, micros in rows.items():
        print(f"| {name} | {max(micros - floor, 0.0):.1f} |")
    own = rows["edge app"] - rows["bare app"]
    print()
    print(
        f"Edge's own cost per request: {own:.1f} µs (edge app - bare app); of it resolution "
        f"{rows['resolution'] - floor:.1f}, guard {rows['guard'] - floor:.1f}, routing among "
        f"Edge's routes {rows['edge router'] - rows['bare router']:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
