"""``RequestIdMiddleware``: every request gets an id, kept for its log lines and echoed back.

It runs after client resolution, which knows whether the peer is a trusted
proxy: only such a peer's ``X-Request-ID`` is taken (``edge.request_ids``).
The id is left in the scope for the relays, which send it upstream as
``X-Request-ID``, set as the context variable the log filter and the store's
events read, and added to the response (an HTTP answer, a WebSocket's
acceptance) so a client can quote it when it reports a problem.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge import request_ids
from edge.gateway.context import REQUEST_ID_KEY, resolution_of

_HEADER = request_ids.HEADER.encode("ascii")
# The messages that start an answer: HTTP, a WebSocket's acceptance, a refused handshake's.
_ANSWERS = frozenset({"http.response.start", "websocket.accept", "websocket.http.response.start"})


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        request_id = request_ids.choose(
            scope["headers"], trusted_peer=resolution_of(scope).trusted_peer
        )
        scope[REQUEST_ID_KEY] = request_id
        echoed = (_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            kind = message["type"]
            if kind in _ANSWERS:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != _HEADER
                ]
                headers.append(echoed)
                message = {**message, "headers": headers}
            await send(message)

        token = request_ids.current.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_ids.current.reset(token)
