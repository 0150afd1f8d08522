"""The dashboard's pages and files, and the one place that sets their security headers.

Every response of the dashboard (``/``, and anything under ``/ui/``, the
static files' own 404s included) leaves through ``DashboardHeaders``, so no
page of it can be framed by another site (clickjacking: a framed "Approve"
click), sniffed into another type or leak its address in a ``Referer``. The
headers are set on the way out, replacing any the inner app wrote, so a file
type or an error path cannot forget them.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.gateway.return_to import MAX_TARGET_CHARS, RETURN_PARAM, return_cookie

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_SET_HERE = frozenset(name for name, _ in SECURITY_HEADERS)


class DashboardHeaders:
    """Pure ASGI wrapper: the dashboard's security headers on every response of ``app``.

    An ``HTTPException`` of the inner app (StaticFiles answers a missing file
    with one) is rendered here rather than by the app's outer exception
    handler, which would send it without these headers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() not in _SET_HERE
                ]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except HTTPException as exc:
            if started:
                raise
            response = PlainTextResponse(
                exc.detail, status_code=exc.status_code, headers=exc.headers
            )
            await response(scope, receive, send_with_headers)


def index_app(ui_dir: Path) -> ASGIApp:
    """``GET /``: the dashboard page, never cached (a new version must show at once).

    Opened with ``?rd=`` (a proxy's sign-in link), the page keeps that target
    in the return cookie for ``GET /api/apps`` to check once the browser is
    paired; opened without it, the cookie is cleared (it is scoped to
    ``/api/apps``, so the page cannot tell whether there is one), so a later
    visit never returns somewhere the visitor did not ask for now.
    """
    page = ui_dir / "index.html"

    async def index(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        response = FileResponse(page, headers={"cache-control": "no-cache"})
        wanted = request.query_params.get(RETURN_PARAM)
        secure = request.url.scheme == "https"
        kept = wanted if wanted is not None and len(wanted) <= MAX_TARGET_CHARS else None
        response.raw_headers.append((b"set-cookie", return_cookie(kept, secure=secure)))
        await response(scope, receive, send)

    return DashboardHeaders(index)


def static_app(ui_dir: Path) -> ASGIApp:
    """``/ui/*``: the dashboard's files, with the same headers as the page."""
    return DashboardHeaders(StaticFiles(directory=ui_dir))
