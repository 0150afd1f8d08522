"""Request paths normalised once, before the guard and the router see them (attack: dot segments).

The guard decides on path prefixes (public, admin) and the router picks an
upstream by prefix; an upstream that receives the raw path would resolve
``/svc/x/../../admin/`` itself, outside the prefix Edge matched. So every
HTTP and WebSocket path is normalised first, and the normalised form is what
every later layer matches on and what is forwarded:

- ``%2e`` (either case) is decoded, then RFC 3986 §5.2.4 dot-segment
  removal runs on the still percent-encoded path;
- an encoded ``/`` (``%2f``), a backslash or an encoded one (``%5c``) is
  refused with 400: servers disagree on whether they separate segments, so no
  reading of them is safe to forward;
- a path whose ``..`` would climb above ``/``, or that was under an upstream
  prefix before removal and is not after, is refused with 400.

``UpstreamPaths`` then maps the normalised path to what one upstream is
asked for (its base path, the prefix stripped or kept, the query as sent) and
maps the upstream's redirects back onto the gateway's paths.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.types import ASGIApp, Receive, Scope, Send
from yarl import URL

from edge.config import UpstreamSettings
from edge.gateway.answers import refuse_http, refuse_websocket
from edge.refusals import Rejection

# Anything that could make normalisation change the path, or that is refused.
_NEEDS_WORK = re.compile(rb"\.|%2[eEfF]|%5[cC]|\\")
_REFUSED = re.compile(rb"%2[fF]|%5[cC]|\\")
_DOT = re.compile(rb"%2[eE]")
# A request target is forwarded byte for byte, so it must be visible ASCII.
_FORWARDABLE_TARGET = re.compile(rb"[\x21-\x7e]*")


class PathRefused(ValueError):
    """A path that cannot be forwarded safely; the message says why and what to send instead."""


@dataclass(frozen=True, slots=True)
class NormalPath:
    raw: bytes  # still percent-encoded: what goes on the upstream's request line
    path: str  # decoded, as ``scope["path"]`` holds it
    climbed: bool  # a ``..`` tried to go above ``/``


def remove_dot_segments(raw: bytes) -> tuple[bytes, bool]:
    """RFC 3986 §5.2.4 on an absolute path; also whether ``..`` tried to climb above ``/``."""
    output: list[bytes] = []
    climbed = False
    segments = raw.split(b"/")[1:] if raw.startswith(b"/") else raw.split(b"/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == b".":
            if last:
                output.append(b"")
        elif segment == b"..":
            if output:
                output.pop()
            else:
                climbed = True
            if last:
                output.append(b"")
        else:
            output.append(segment)
    return b"/" + b"/".join(output), climbed


def normalise(raw: bytes) -> NormalPath:
    """The normalised form of a raw (percent-encoded) request path, or ``PathRefused``."""
    if _REFUSED.search(raw):
        raise PathRefused(
            "the path holds an encoded '/' (%2F) or a backslash (\\ or %5C), which Edge does "
            "not forward; send '/' between segments and percent-encode nothing else as a slash"
        )
    decoded_dots = _DOT.sub(b".", raw)
    result, climbed = remove_dot_segments(decoded_dots)
    return NormalPath(result, unquote(result.decode("latin-1"), "latin-1"), climbed)


class PathNormalisationMiddleware:
    """Normalise ``scope["path"]``/``raw_path`` for HTTP and WebSocket; refuse unsafe paths (400).

    ``prefixes`` are the upstream path prefixes: a path that normalisation
    moves out of one was aimed past it, and is refused rather than served by
    whatever it lands on.
    """

    def __init__(self, app: ASGIApp, prefixes: Iterable[str] = ()) -> None:
        self.app = app
        self.prefixes = tuple(prefixes)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain method: a path that needs no work (nearly all) costs no coroutine here.
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            return self.app(scope, receive, send)
        path: str = scope["path"]
        raw: bytes = scope.get("raw_path") or quote(path).encode("ascii")
        if scope.get("root_path") or not _NEEDS_WORK.search(raw):
            return self.app(scope, receive, send)
        return self._normalised(scope, receive, send, path, raw)

    async def _normalised(
        self, scope: Scope, receive: Receive, send: Send, path: str, raw: bytes
    ) -> None:
        try:
            normal = normalise(raw)
            if normal.climbed:
                raise PathRefused(
                    "the path's '..' segments climb above '/'; send the path the link resolves to"
                )
            for prefix in self.prefixes:
                if path.startswith(prefix) and not normal.path.startswith(prefix):
                    raise PathRefused(
                        f"the path leaves the upstream prefix {prefix!r} once its '.' and '..' "
                        "segments are resolved; send the path the link resolves to"
                    )
        except PathRefused as exc:
            await _refuse(scope, receive, send, str(exc))
            return
        if normal.raw != raw:
            scope = {**scope, "path": normal.path, "raw_path": normal.raw}
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
    if scope["type"] == "http":
        await refuse_http(send, Rejection.PATH_REFUSED, detail)
        return
    if (await receive())["type"] != "websocket.connect":
        return
    await refuse_websocket(scope, send, Rejection.PATH_REFUSED, detail)


Target = tuple[str, str]  # the raw path and query, still percent-encoded


@dataclass(frozen=True, slots=True)
class UpstreamPaths:
    """Where one upstream's requests go, and how its redirects come back onto the gateway."""

    prefix: str
    strip_prefix: bool
    url: str  # the upstream's base URL as configured
    base: URL

    @classmethod
    def of(cls, upstream: UpstreamSettings) -> UpstreamPaths:
        return cls(upstream.path_prefix, upstream.strip_prefix, upstream.url, URL(upstream.url))

    def target(self, scope: Scope) -> Target | None:
        """The raw path and query (still percent-encoded) to ask the upstream for.

        ``None`` when they hold bytes that cannot go on a request line.
        """
        path: str = scope["path"]
        raw: bytes = scope.get("raw_path") or quote(path).encode("ascii")
        query: bytes = scope.get("query_string", b"")
        prefix = self.prefix.encode("ascii")
        if self.strip_prefix:
            if raw.startswith(prefix):
                raw = raw[len(prefix) - 1 :]
            else:  # the client percent-encoded part of the prefix
                raw = quote(path[len(self.prefix) - 1 :]).encode("ascii")
        if not (_FORWARDABLE_TARGET.fullmatch(raw) and _FORWARDABLE_TARGET.fullmatch(query)):
            return None
        base_path = self.base.raw_path.rstrip("/")
        return (base_path + raw.decode("ascii")) or "/", query.decode("ascii")

    def http_url(self, target: Target) -> URL:
        return self._url(self.base.scheme, target)

    def websocket_url(self, target: Target) -> str:
        return str(self._url("wss" if self.base.scheme == "https" else "ws", target))

    def _url(self, scheme: str, target: Target) -> URL:
        path, query = target
        return URL.build(
            scheme=scheme,
            authority=self.base.raw_authority,
            path=path,
            query_string=query,
            encoded=True,
        )

    def rewrite_location(self, value: bytes) -> bytes:
        """An absolute redirect to the upstream itself becomes a path on the gateway."""
        base = self.url.encode("latin-1")
        if not value.startswith(base) or value[len(base) : len(base) + 1] not in (b"", b"/", b"?"):
            return value
        rest = value[len(base) :]
        if not rest.startswith(b"/"):
            rest = b"/" + rest
        if self.strip_prefix:
            rest = self.prefix[:-1].encode("ascii") + rest
        return rest
