"""A slow pairing store delays the requests that need it, and no others on the same worker.

A real ``redis-server`` sits behind a loopback TCP proxy written here, which
delays every reply by 200 ms and, once told to hold, keeps Redis's replies
until it is told to release them. ``edge serve`` (one worker) uses the proxy's
address as its store. While several requests with unknown bearer tokens are
held inside the store, the same worker must still answer ``/healthz`` and a
request whose bearer token it has seen recently: those touch no store. The
test asserts order, not speed: the quick answers arrive while every slow
request is provably still waiting on a held reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
import redis
from websockets.sync.client import connect

from tests.conftest import Device
from tests.integration.conftest import EdgeServer
from tests.redis_server import shared_redis_server, stop_shared_redis_server  # noqa: F401

pytestmark = pytest.mark.integration

REPLY_DELAY = 0.2
SLOW_REQUESTS = 6
# Liveness bounds, not measurements: how long to wait before calling a worker stuck.
STUCK = 20.0


class HoldingProxy:
    """TCP proxy to Redis on 127.0.0.1: each reply is delayed, and held while ``hold`` is on.

    Requests go to Redis at once; what Redis answers waits ``delay`` seconds
    and then, while holding, for ``release``. ``held_connections`` counts the
    connections with an answer waiting, which is how the test knows how many
    requests are inside the store.
    """

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._gate = asyncio.Event()
        self._gate.set()
        self._holding: set[int] = set()
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="holding-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self._started.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        ident = id(client_w)
        upward = asyncio.ensure_future(self._pump(client_r, redis_w))
        downward = asyncio.ensure_future(self._replies(ident, redis_r, client_w))
        try:
            await asyncio.wait((upward, downward), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in (upward, downward):
                pump.cancel()
            for writer in (client_w, redis_w):
                writer.close()
            with self._lock:
                self._holding.discard(ident)
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _replies(
        self, ident: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while data := await reader.read(65536):
            with self._lock:
                self._holding.add(ident)
            await asyncio.sleep(self.delay)
            await self._gate.wait()
            with self._lock:
                self._holding.discard(ident)
            writer.write(data)
            await writer.drain()

    def held_connections(self) -> int:
        with self._lock:
            return len(self._holding) if not self._gate.is_set() else 0

    def hold(self) -> None:
        """From now on, replies wait for ``release`` (in effect when this returns)."""
        self._on_loop(self._gate.clear)

    def release(self) -> None:
        self._on_loop(self._gate.set)

    def _on_loop(self, action: Callable[[], None]) -> None:
        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            self._gate.set()
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def slow_redis() -> Iterator[tuple[HoldingProxy, str]]:
    """The proxy in front of the shared Redis, and the store URL (own prefix) through it."""
    server = shared_redis_server()
    proxy = HoldingProxy(server.port, REPLY_DELAY)
    proxy.start()
    prefix = f"slow{uuid.uuid4().hex[:12]}"
    # A held reply must not time out in the store's client: the test releases it.
    url = f"redis://127.0.0.1:{proxy.port}/0?prefix={prefix}&socket_timeout=120"
    try:
        yield proxy, url
    finally:
        proxy.stop()
        server.drop_prefix(prefix)


def _local_admin_token(server: EdgeServer) -> str:
    """A device token of a local operator's dashboard (loopback, no proxy headers).

    Returns once the worker has applied every event the pairing caused: the
    token's own ``device.token_rotated`` clears the worker's token cache when it
    arrives, so a check made before that could be forgotten again. An invite
    made afterwards is a later event; seeing it on the admin socket means the
    earlier ones were applied.
    """
    device = Device("operator")
    with connect(server.ws_url, open_timeout=STUCK) as ws:
        challenge = json.loads(ws.recv(timeout=STUCK))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {}, "admin")))
        hello = json.loads(ws.recv(timeout=STUCK))
        assert hello["type"] == "hello", hello
        made = httpx.post(f"{server.url}/api/invites", json={}, timeout=STUCK)
        assert made.status_code == 200, made.text
        while True:
            frame = json.loads(ws.recv(timeout=STUCK))
            if frame.get("type") == "event" and frame.get("event") == "invite.created":
                break
    return str(hello["deviceToken"])


def _get(server: EdgeServer, path: str, ip: str, token: str | None = None) -> httpx.Response:
    headers = {"x-forwarded-for": ip}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=STUCK)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STUCK
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.02)


def test_requests_that_need_no_store_are_answered_while_store_reads_are_held(
    edge_server_factory: Callable[..., EdgeServer], slow_redis: tuple[HoldingProxy, str]
) -> None:
    proxy, url = slow_redis
    server = edge_server_factory(
        {"store": {"url": url}, "proxy": {"trusted_proxies": ["127.0.0.1"]}}
    )
    token = _local_admin_token(server)
    # A remote client (through the trusted proxy) whose token the worker has just checked.
    seen = _get(server, "/api/whoami", "198.51.100.10", token)
    assert seen.json()["auth"]["state"] == "paired"

    proxy.hold()
    slow: list[Future[httpx.Response]] = []
    with ThreadPoolExecutor(SLOW_REQUESTS) as pool:
        try:
            slow = [
                pool.submit(_get, server, "/api/whoami", f"198.51.100.{100 + n}", f"unknown-{n}")
                for n in range(SLOW_REQUESTS)
            ]
            # Every unknown token is inside the store at once: the worker took them all.
            _wait_until(
                lambda: proxy.held_connections() >= SLOW_REQUESTS,
                f"only {proxy.held_connections()} of {SLOW_REQUESTS} cache-miss requests reached "
                "the store together: the worker is serving one store call at a time",
            )
            try:
                health = _get(server, "/healthz", "198.51.100.20")
                cached = _get(server, "/api/whoami", "198.51.100.10", token)
            except httpx.TimeoutException:
                pytest.fail("the worker answered nothing while the store's replies were held")
            assert not any(request.done() for request in slow)
            assert proxy.held_connections() >= SLOW_REQUESTS
        finally:
            proxy.release()
        answers = [request.result(timeout=STUCK) for request in slow]

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert cached.json()["auth"]["state"] == "paired"
    for answer in answers:
        assert answer.status_code == 200  # /api/whoami is public: it reports, it does not refuse
        assert answer.json()["auth"]["state"] == "anonymous"


def test_the_proxy_holds_and_releases_redis_replies(
    slow_redis: tuple[HoldingProxy, str],
) -> None:
    """The instrument itself: a held reply is counted, and arrives once released."""
    proxy, _ = slow_redis
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=STUCK)
    with contextlib.closing(client):
        assert client.ping()
        proxy.hold()
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(client.ping)
            _wait_until(lambda: proxy.held_connections() == 1, "the reply was not held")
            assert not answer.done()
            proxy.release()
            assert answer.result(timeout=STUCK)
