"""The WebSocket half of forwarding: the upstream handshake's headers and the frame relay.

WebSockets go over the ``websockets`` client, whose close codes and reasons
the relay passes on both ways; codes a close frame may not carry are
replaced by ones it may.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

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


async def deny_websocket(
    scope: Scope,
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    close_code: int,
    close_reason: str,
) -> None:
    """An HTTP answer to the handshake where the server can send one, else accept and close.

    Closing before accepting would reach the client as a bare 403 with no reason.
    The client's ``websocket.connect`` message has been received already.
    """
    if "websocket.http.response" in scope.get("extensions", {}):
        response_headers = [(k, v) for k, v in headers if k != b"content-type"]
        response_headers.append((b"content-type", b"application/json"))
        response_headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send(
            {"type": "websocket.http.response.start", "status": status, "headers": response_headers}
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": close_code, "reason": close_reason})


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
