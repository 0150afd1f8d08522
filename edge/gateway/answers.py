"""Sending a refusal over ASGI: the HTTP answer, or the WebSocket handshake's answer or close.

What a refusal says lives in ``edge.refusals``; this module only puts it on
the wire, so every pure-ASGI layer (path normalisation, the upstream relays)
refuses the same way.

A WebSocket handshake is answered over HTTP where the server can send one
(the ``websocket.http.response`` extension), so a client that cannot read a
close frame still sees the status and the JSON body; elsewhere the socket is
accepted and then closed with the refusal's code and reason, because closing
before accepting reaches the client as a bare 403 with no reason at all.
"""

from __future__ import annotations

from starlette.types import Scope, Send

from edge.refusals import AnyRefusal, close_frame, http_answer

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]


async def send_answer(send: Send, answer: Answer) -> None:
    """An HTTP response: ``(status, headers, body)`` with its ``content-length``."""
    status, headers, body = answer
    headers = [(b"content-length", str(len(body)).encode("ascii")), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def refuse_http(
    send: Send, refusal: AnyRefusal, detail: str | None = None, *, status: int | None = None
) -> None:
    await send_answer(send, http_answer(refusal, detail, status=status))


async def deny_websocket(scope: Scope, send: Send, answer: Answer, close: tuple[int, str]) -> None:
    """Answer a handshake with ``answer`` where the server can send one, else accept and close.

    The client's ``websocket.connect`` message has been received already.
    """
    if "websocket.http.response" in scope.get("extensions", {}):
        status, headers, body = answer
        response_headers = [(k, v) for k, v in headers if k != b"content-type"]
        response_headers.append((b"content-type", b"application/json"))
        response_headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send(
            {"type": "websocket.http.response.start", "status": status, "headers": response_headers}
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    code, reason = close
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


async def refuse_websocket(
    scope: Scope,
    send: Send,
    refusal: AnyRefusal,
    detail: str | None = None,
    *,
    status: int | None = None,
) -> None:
    """``deny_websocket`` with the refusal's own answer and close frame."""
    await deny_websocket(
        scope, send, http_answer(refusal, detail, status=status), close_frame(refusal)
    )
