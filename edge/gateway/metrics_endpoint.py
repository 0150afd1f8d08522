"""``GET /metrics``: who may scrape, on the gateway's port or on a listener of its own.

Both places answer with the same endpoint and the same rule: local clients,
``metrics.allowed_networks``, or the holder of ``metrics.bearer_token``; a
device token does not open it. On the gateway's port the client was resolved
by ``ClientResolutionMiddleware``; the dedicated listener (``metrics.port``)
runs in the ``edge serve`` process, outside the workers, so it resolves the
client itself (trusting no proxy: scrapers reach it directly) and renders what
every worker wrote.

A wrong ``metrics.bearer_token`` is a guess at a secret like any other: it
counts towards the per-address lockout (in the pairing store, so every worker,
replica and the listener see the same lockout) and towards
``edge_auth_failures_total{reason="metrics_token_mismatch"}``.

The answer is the renderer's exposition (the gateway's own series) followed by
the process's ``process_*`` and ``python_*`` series, which exist only while the gateway
is a single process (``edge.process_metrics``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.config import Settings
from edge.gateway.blocking import Blocking
from edge.gateway.context import PEER_OWNER_KEY, RESOLUTION_KEY
from edge.gateway.guard import bearer_header
from edge.gateway.live import LiveConfig, live_config
from edge.logs import silence_protocol_content
from edge.metrics import render_exposition
from edge.net import NOT_LOOKED_UP, PeerOwner, Resolution, client_key, resolve
from edge.net.address import parse_ip
from edge.pairing.store import Store, StoreError, open_store
from edge.pairing.tokens import secrets_equal
from edge.process_metrics import process_exposition
from edge.refusals import AnyRefusal, Denial, Rejection, http_answer

Renderer = Callable[[], tuple[bytes, str]]
MISMATCH = Denial.METRICS_TOKEN_MISMATCH.metric_label


class Guesses(Protocol):
    """Where failed attempts are counted: ``PairingService`` on the gateway's port."""

    def lockout_remaining(self, client_key: str) -> float: ...

    def record_failure(self, client_key: str) -> bool: ...


class StoreGuesses:
    """``Guesses`` straight on the pairing store, for the listener (which has no service).

    The store is opened on the first wrong guess, not at start: a listener that
    is only ever scraped correctly never touches it.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: Store | None = None
        self._lock = threading.Lock()

    def _open(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_store(self._settings.store.url, self._settings.data_dir)
            return self._store

    def lockout_remaining(self, client_key: str) -> float:
        if self._store is None:
            return 0.0
        try:
            return max(0.0, self._store.locked_until(client_key) - time.time())
        except StoreError:
            return 0.0

    def record_failure(self, client_key: str) -> bool:
        limit = self._settings.auth.rate_limit
        until = self._open().record_failure(
            client_key,
            now=time.time(),
            window=limit.window,
            threshold=limit.failures,
            lockout=limit.lockout,
        )
        return until is not None


def metrics_allowed(live: LiveConfig, resolution: Resolution, scope: Any) -> bool:
    """Local clients, ``metrics.allowed_networks``, or ``metrics.bearer_token``."""
    return _judge(live, resolution, scope) in ("open", "token")


def _judge(live: LiveConfig, resolution: Resolution, scope: Any) -> str:
    """``open`` (local or allowed network), ``token`` (right one), ``missing`` or ``mismatch``."""
    if resolution.local:
        return "open"
    ip = parse_ip(resolution.client_ip) if resolution.client_ip else None
    if ip is not None and ip in live.metrics_networks:
        return "open"
    # The header only: a browser's session cookie is no guess at the metrics token.
    presented = bearer_header(scope)
    if presented is None:
        return "missing"
    expected = live.settings.metrics.bearer_token
    if expected and secrets_equal(presented, expected):
        return "token"
    return "mismatch"


def _refusal(retry_after: float = 0.0) -> Response:
    extra = [(b"www-authenticate", b'Bearer realm="edge-metrics"')]
    refusal: AnyRefusal
    detail: str | None
    if retry_after > 0:
        extra.append((b"retry-after", str(int(retry_after) + 1).encode()))
        refusal, detail = (
            Denial.RATE_LIMITED,
            "Too many wrong metrics.bearer_token guesses from this address. "
            f"{Denial.RATE_LIMITED.next_step}",
        )
    else:
        refusal, detail = Rejection.METRICS_FORBIDDEN, None
    status, headers, body = http_answer(refusal, detail, headers=tuple(extra))
    response = Response(body, status_code=status)
    response.raw_headers = [(b"content-length", str(len(body)).encode("ascii")), *headers]
    return response


def metrics_endpoint(
    live: Callable[[], LiveConfig],
    render: Renderer,
    guesses: Guesses,
    count_failure: Callable[[str], None],
    blocking: Blocking,
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint; ``guesses`` keeps the lockout (through ``blocking``), ``count_failure``
    the refusal metric."""

    async def endpoint(request: Request) -> Response:
        config = live()
        resolution = request.scope.get(RESOLUTION_KEY)
        if not isinstance(resolution, Resolution):  # the dedicated listener
            owner = request.scope.get(PEER_OWNER_KEY)
            resolution = resolve(
                request.scope.get("client"),
                request.scope["headers"],
                config.policy,
                scheme=request.scope.get("scheme", "http"),
                peer_owner=owner if isinstance(owner, PeerOwner) else NOT_LOOKED_UP,
            )
        verdict = _judge(config, resolution, request.scope)
        if verdict == "missing":
            return _refusal()
        if verdict != "open":
            # A presented token: a locked-out address does not get in even by guessing right.
            # The same key as every other lockout: the IPv4 address or the IPv6 prefix.
            key = client_key(resolution.client_ip, config.settings.auth.rate_limit.ipv6_prefix)
            remaining = await blocking.run(guesses.lockout_remaining, key)
            if remaining > 0:
                count_failure(Denial.RATE_LIMITED.metric_label)
                return _refusal(remaining)
            if verdict == "mismatch":
                count_failure(MISMATCH)
                with contextlib.suppress(StoreError):  # refused all the same while it is down
                    await blocking.run(guesses.record_failure, key)
                return _refusal()
        data, content_type = render()
        data += process_exposition()
        return Response(data, headers={"content-type": content_type, "cache-control": "no-store"})

    return endpoint


def listener_app(settings: Settings) -> Starlette:
    """The app of the dedicated listener: ``metrics.path`` and nothing else.

    Its access rules are read once, at start; ``edge gateway reload`` reaches
    the workers, not this listener.
    """
    # Scrapers talk to the listener directly: no peer there may name another client.
    direct = settings.model_copy(
        update={"proxy": settings.proxy.model_copy(update={"trusted_proxies": []})}
    )
    live = live_config(direct)
    # This process is no worker: its refusals land in the shared directory through a
    # counter of its own, which the exposition adds to the workers' ones.
    failures = Counter(
        "edge_auth_failures",
        "Refused authentications by reason.",
        ["reason"],
        registry=CollectorRegistry(),
    )
    endpoint = metrics_endpoint(
        lambda: live,
        render_exposition,
        StoreGuesses(settings),
        lambda reason: failures.labels(reason=reason).inc(),
        Blocking(2, name="edge-metrics-blocking"),
    )
    return Starlette(routes=[Route(settings.metrics.path, endpoint)])


def bind_listener(settings: Settings) -> socket.socket:
    """The listening socket of ``metrics.host:metrics.port``; OSError when it cannot be had."""
    host, port = settings.metrics.host, settings.metrics.port
    assert port is not None
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve_listener(
    settings: Settings, sock: socket.socket, uvicorn_settings: Mapping[str, object]
) -> threading.Thread:
    """Serve ``listener_app`` on ``sock`` from a daemon thread of this process.

    ``uvicorn_settings`` are the ones ``edge serve`` runs the gateway with.
    """
    import uvicorn

    from edge.gateway.protocols import HTTP_PROTOCOL

    config = uvicorn.Config(
        listener_app(settings),
        log_level=settings.logging.level,
        lifespan="off",
        http=HTTP_PROTOCOL,  # a local scraper is local here too: its owner is looked up
        **uvicorn_settings,  # type: ignore[arg-type]
    )
    silence_protocol_content()  # after Config: it has just (re)configured uvicorn's loggers
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="edge-metrics-listener", daemon=True
    )
    thread.start()
    return thread
