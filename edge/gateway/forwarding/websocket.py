"""The WebSocket half of forwarding: the upstream handshake and the frame relay.

The caller was admitted already (``edge.gateway.guard.admit_websocket``, the
same credentials and Origin rule as for HTTP); this module only opens the
upstream's socket and relays. WebSockets go over the ``websockets`` client,
whose close codes and reasons the relay passes on both ways; codes a close
frame may not carry are replaced by ones it may. An upstream that refuses
the handshake, cannot be reached or is too slow is answered like an HTTP
request to it would be (its own status, 502 or 504) where the server can
answer the handshake over HTTP, else with a 1014 close.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable

from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin, Subprotocol

from edge.config import UpstreamSettings
from edge.gateway.answers import refuse_websocket
from edge.gateway.context import AuthState, request_id_of, resolution_of
from edge.gateway.forwarding.headers import upstream_request_headers
from edge.gateway.forwarding.paths import UpstreamPaths
from edge.refusals import Rejection

# The WebSocket client library writes these itself for the upstream handshake.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        b"host",
        b"origin",
        b"user-agent",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"sec-websocket-key",
        b"sec-websocket-protocol",
        b"sec-websocket-version",
    }
)
WEBSOCKET_MAX_MESSAGE = 16 * 1024 * 1024
# Close codes that may not appear in a close frame, and what to send instead.
_UNSENDABLE_CLOSE = {1005: 1000, 1006: 1014, 1015: 1014}


# RFC 6455 4.1: each subprotocol is an RFC 7230 token.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def subprotocols(scope: Scope) -> list[Subprotocol] | None:
    """The subprotocols the client offered, passed on to the upstream.

    Only valid tokens go on: the client library refuses anything else with an
    exception, and a client's malformed offer must not become a server error.
    """
    offered = [
        Subprotocol(token.strip())
        for key, value in scope["headers"]
        if key == b"sec-websocket-protocol"
        for token in value.decode("latin-1").split(",")
        if _TOKEN.match(token.strip())
    ]
    return offered or None


def sendable(code: int | None) -> int:
    if code is None:
        return 1000
    return _UNSENDABLE_CLOSE.get(code, code)


async def relay_websocket(upstream: ClientConnection, receive: Receive, send: Send) -> None:
    """Frames both ways until one side closes; its close code and reason go to the other."""

    async def client_to_upstream() -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                code = sendable(message.get("code", 1000))
                await upstream.close(1001 if code == 1014 else code, message.get("reason") or "")
                return

    async def upstream_to_client() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        code = upstream.close_code
        reason = upstream.close_reason or ""
        if code == 1006:
            reason = "upstream connection lost"
        await send({"type": "websocket.close", "code": sendable(code), "reason": reason})

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await task


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def forward_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    upstream: UpstreamSettings,
    paths: UpstreamPaths,
    auth: AuthState,
    observe: Callable[[int, float], None],
    warn: Callable[[str, BaseException], None],
    opened: Callable[[], None],
) -> None:
    """Open ``upstream``'s socket for an admitted caller, then relay frames until one side closes.

    The client's ``websocket.connect`` has been received; ``opened`` runs once
    the upstream accepted, before the client is.
    """
    label = upstream.label
    target = paths.target(scope)
    if target is None:
        await refuse_websocket(scope, send, Rejection.PATH_UNFORWARDABLE)
        return
    origin = header(scope, b"origin")
    connected = time.perf_counter()
    try:
        socket = await connect(
            paths.websocket_url(target),
            additional_headers=[
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in upstream_request_headers(
                    scope["headers"],
                    resolution_of(scope),
                    auth,
                    request_id=request_id_of(scope),
                    drop=WEBSOCKET_HANDSHAKE,
                )
            ],
            origin=Origin(origin) if origin is not None else None,
            user_agent_header=header(scope, b"user-agent"),
            subprotocols=subprotocols(scope),
            open_timeout=upstream.connect_timeout,
            max_size=WEBSOCKET_MAX_MESSAGE,
            proxy=None,
            compression=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        observe(status, time.perf_counter() - connected)
        detail = f"upstream {label!r} answered {status}"
        await refuse_websocket(scope, send, Rejection.UPSTREAM_REFUSED, detail, status=status)
        return
    except (TimeoutError, OSError, InvalidHandshake) as exc:
        timed_out = isinstance(exc, TimeoutError)
        refusal = Rejection.UPSTREAM_TIMEOUT if timed_out else Rejection.UPSTREAM_UNREACHABLE
        observe(refusal.http_status, time.perf_counter() - connected)
        warn("timeout" if timed_out else "unreachable", exc)
        detail = f"upstream {label!r} WebSocket failed ({type(exc).__name__})"
        await refuse_websocket(scope, send, refusal, detail)
        return
    observe(101, time.perf_counter() - connected)
    opened()
    try:
        await send({"type": "websocket.accept", "subprotocol": socket.subprotocol})
        await relay_websocket(socket, receive, send)
    finally:
        await socket.close()
