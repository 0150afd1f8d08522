"""The HTTP half of forwarding: the pooled aiohttp client, the request body, the relay helpers.

HTTP goes over one ``aiohttp.ClientSession`` per upstream and event loop (a
keepalive pool; when the connection drops before an answer, as an idle one
the upstream closed does, aiohttp sends an idempotent request once more, never
a POST nor a body already streamed). ``benchmarks/proxy.py`` measured it
forwarding 1.5 to 1.7 times the requests/s of a hand-written h11 transport
under ``httpx``, and httpx's own pool, however tuned, a fifth to a third of
it (``docs/performance.md``, "Proxy forwarding").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable

import aiohttp
from starlette.types import Receive, Send

from edge.config import UpstreamSettings

# aiohttp adds these unless told not to; the upstream should see only what the client sent.
NOT_ADDED = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
MAX_CONNECTIONS = 512
KEEPALIVE_EXPIRY = 4.0  # below uvicorn's 5 s keep-alive, so Edge lets go of an idle one first
MAX_HEADER_LINE = 64 * 1024  # long Set-Cookie and CSP lines are real; aiohttp's default is 8 KiB
READ_SIZE = 64 * 1024


class ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class UnsendableHeader(Exception):
    """A request header value aiohttp could not send byte for byte."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def text_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Headers as aiohttp takes them: it writes values as UTF-8, so only UTF-8 round-trips."""
    text: list[tuple[str, str]] = []
    for name, value in headers:
        try:
            text.append((name.decode("latin-1"), value.decode("utf-8")))
        except UnicodeDecodeError:
            raise UnsendableHeader(name.decode("latin-1")) from None
    return text


def upstream_session(
    upstream: UpstreamSettings, *, max_connections: int = MAX_CONNECTIONS
) -> aiohttp.ClientSession:
    """The pooled client for one upstream, on the running event loop.

    ``timeout`` bounds each wait for the next bytes of the upstream's answer
    (the upload is bounded by the caller: ``RequestBody``) and
    ``connect_timeout`` the wait for a pooled or new connection. It keeps no
    cookies (every caller shares it), takes no proxy from the environment and
    leaves bodies as the upstream encoded them.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_EXPIRY
        ),
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=upstream.connect_timeout,
            sock_connect=upstream.connect_timeout,
            sock_read=upstream.timeout,
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=NOT_ADDED,
        auto_decompress=False,
        trust_env=False,
        max_line_size=MAX_HEADER_LINE,
        max_field_size=MAX_HEADER_LINE,
    )


def json_body(error: str, detail: str) -> bytes:
    return json.dumps({"error": error, "detail": detail}).encode()


def has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class RequestBody:
    """The client's request body, pulled by aiohttp as it writes to the upstream.

    aiohttp has no write timeout, so an upstream that stops reading would stall
    an upload for ever. While aiohttp holds a chunk, the caller's ``deadline``
    (an ``asyncio.timeout`` around the request) is set ``write_timeout`` ahead;
    it is lifted again once the chunk is taken, so a slow client costs nothing.
    """

    def __init__(self, receive: Receive, write_timeout: float) -> None:
        self._receive = receive
        self._write_timeout = write_timeout
        self.deadline: asyncio.Timeout | None = None
        self.client_gone = False
        self.finished = asyncio.Event()  # the whole body was read (or the client left)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self.client_gone = True
                    raise ClientGone
                body = message.get("body", b"")
                if body:
                    self._set_deadline(self._write_timeout)
                    yield body
                    self._set_deadline(None)
                if not message.get("more_body", False):
                    return
        finally:
            self.finished.set()

    def _set_deadline(self, seconds: float | None) -> None:
        deadline = self.deadline
        if deadline is not None and not deadline.expired():
            when = None if seconds is None else asyncio.get_running_loop().time() + seconds
            deadline.reschedule(when)


async def relay_body(response: aiohttp.ClientResponse, send: Send) -> None:
    async for chunk in response.content.iter_chunked(READ_SIZE):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def wait_disconnect(receive: Receive, body_read: asyncio.Event) -> None:
    """Until the client disconnects; ``receive`` is the body's until all of it is read."""
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_simple(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [(b"content-length", str(len(body)).encode("ascii")), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, error: str, detail: str) -> None:
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await send_simple(send, status, json_body(error, detail), headers)
