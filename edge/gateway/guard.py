"""The guard: who an HTTP caller is, and the refusals of protected routes.

Every request first passes ``ClientResolutionMiddleware``
(``edge.gateway.resolution``, re-exported here), which leaves the resolved
client in the scope. ``GuardMiddleware`` then decides who an HTTP caller is
(local, a paired device, or nobody), answers 401/403 on protected routes, and
counts the decision. The control socket does its own handshake, so WebSocket
scopes only pass through the resolution step.

Who a caller is comes from ``Authenticator``, which the guard, forward-auth
and upstream WebSockets share. It answers from the pairing service's caches on
the event loop (a recently seen token, a known lockout state: no I/O, no
thread hop) and asks the store through the blocking door only when the caches
cannot answer (an unknown token, a failed attempt to count), so a slow store
delays the requests that need it and no others.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.config import Settings
from edge.gateway.answers import deny_websocket, refuse_websocket
from edge.gateway.blocking import Blocking
from edge.gateway.context import (
    ANONYMOUS,
    AUTH_KEY,
    CONNECTION_KEY,
    LOCAL,
    RESOLUTION_KEY,
    AuthState,
    Connection,
    paired_state,
)
from edge.gateway.forwarding.headers import SESSION_COOKIE as SESSION_COOKIE
from edge.gateway.forwarding.headers import hostname_of, session_token
from edge.gateway.live import Live
from edge.gateway.origins import normalise_origin, origin_allowed, own_origin
from edge.gateway.resolution import ClientResolutionMiddleware as ClientResolutionMiddleware
from edge.metrics import Metrics
from edge.net import Resolution
from edge.pairing.caches import TOUCH_RESOLUTION
from edge.pairing.models import Device, Role
from edge.pairing.service import FailureCounted, PairingService
from edge.pairing.store import StoreError
from edge.refusals import Denial, Rejection, close_frame, http_answer, http_detail

# The API document is public like the refusal table: it describes routes, holds no secret,
# and a client must be able to read it before it has paired.
PUBLIC_EXACT = frozenset(
    {
        "/",
        "/healthz",
        "/readyz",
        "/api/whoami",
        "/api/refusals",
        "/api/openapi.json",
        "/favicon.ico",
    }
)
PUBLIC_PREFIXES = ("/ui/",)
SELF_GUARDED_PREFIXES = ("/auth/",)  # forward-auth endpoints judge the forwarded request
ADMIN_PREFIXES = ("/api/devices", "/api/requests", "/api/invites")
# Edge's own state-changing routes; an upstream app behind Edge judges its own forms.
CONTROL_WRITE_PREFIXES = ("/api/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})
# How long a keep-alive connection's repeated request may reuse its credential decision.
AUTH_MEMO_SECONDS = 1.0

logger = logging.getLogger("edge.access")


def _credential(scope: Scope) -> tuple[str, bool] | None:
    """The presented device token and whether it came from the session cookie.

    An ``Authorization: Bearer`` header wins over the cookie: a page of another
    site can make the browser attach the cookie, but never set that header.
    The cookie is read by the header policy's parser, the same one that
    strips it before forwarding (``edge.gateway.forwarding.headers``), so a
    cookie spelling that authenticates here is never passed to an upstream.
    """
    headers = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, credential = header.partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip(), False
    token = session_token(headers, secure=_is_secure(scope))
    return (token, True) if token is not None else None


def _is_secure(scope: Scope) -> bool:
    """Whether the client reached the gateway over TLS (after resolution)."""
    resolution = scope.get(RESOLUTION_KEY)
    scheme = resolution.scheme if isinstance(resolution, Resolution) else scope.get("scheme")
    return scheme in ("https", "wss")


def bearer_header(scope: Scope) -> str | None:
    """The ``Authorization: Bearer`` credential alone, never the cookie (the metrics token)."""
    found = _credential({"headers": [h for h in scope["headers"] if h[0] == b"authorization"]})
    return found[0] if found is not None else None


def _bearer(scope: Scope) -> str | None:
    """The presented device token, from the Authorization header or the session cookie."""
    found = _credential(scope)
    return found[0] if found is not None else None


class Credentials(Protocol):
    """What ``authenticate_http`` asks: ``PairingService``, or its caches alone (``_Cached``)."""

    def client_key(self, client_ip: str | None) -> str: ...

    def lockout_remaining(self, client_key: str) -> float: ...

    def authenticate_token(
        self, device_token: str, *, client_ip: str | None = None
    ) -> Device | Denial: ...

    def count_failure(self, client_key: str) -> FailureCounted: ...


def authenticate_http(service: Credentials, scope: Scope) -> AuthState:
    """Local, paired, or anonymous (with the denial that applies).

    A valid device token is answered before the lockout is looked at: the
    lockout stops guessing, and a 256-bit device token is not guessed, so a
    guesser sharing an address with paired devices (a NAT, a VPN exit)
    cannot lock them out. Anything else from a locked-out address is refused
    as such and not counted again.

    Blocking when ``service`` is the pairing service itself (the store may be
    asked): async code calls ``Authenticator`` instead.
    """
    resolution = scope[RESOLUTION_KEY]
    if resolution.local:
        return LOCAL
    found = _credential(scope)
    if found is None:
        return ANONYMOUS
    token, via_cookie = found
    outcome = service.authenticate_token(token, client_ip=resolution.client_ip)
    if isinstance(outcome, Device):
        return paired_state(outcome, via_cookie)
    key = service.client_key(resolution.client_ip)
    remaining = service.lockout_remaining(key)
    if remaining > 0:
        return AuthState("anonymous", denial=Denial.RATE_LIMITED, retry_after=remaining)
    # A cookie is not a guess: the browser sends whatever cookie it holds, and one a
    # sibling host tossed in must not lock the browser's own address out.
    if outcome.counts_as_failure and not via_cookie:
        counted = service.count_failure(key)
        return AuthState(
            "anonymous",
            denial=outcome,
            retry_after=counted.locked_for,
            tries_left=counted.tries_left,
        )
    return AuthState("anonymous", denial=outcome)


class _NeedsStore(Exception):
    """The caches cannot answer: only the store can."""


class _Cached:
    """``Credentials`` from the service's caches alone; ``_NeedsStore`` where they end.

    A lockout state whose recheck is due still answers (what this process
    knows: its own lockouts at once, other processes' through the event log)
    and has ``refresh`` re-read it off the loop, so an active client never
    waits for that recheck.
    """

    __slots__ = ("_refresh", "_service")

    def __init__(self, service: PairingService, refresh: Callable[[str], None]) -> None:
        self._service = service
        self._refresh = refresh

    def client_key(self, client_ip: str | None) -> str:
        return self._service.client_key(client_ip)

    def lockout_remaining(self, client_key: str) -> float:
        known = self._service.known_lockout(client_key)
        if known is None:
            raise _NeedsStore
        remaining, recheck_due = known
        if recheck_due:
            self._refresh(client_key)
        return remaining

    def authenticate_token(
        self, device_token: str, *, client_ip: str | None = None
    ) -> Device | Denial:
        outcome = self._service.known_authentication(device_token, client_ip=client_ip)
        if outcome is None:
            raise _NeedsStore
        return outcome

    def count_failure(self, client_key: str) -> FailureCounted:
        raise _NeedsStore  # a write: always the store's


class Authenticator:
    """``authenticate_http`` for async code: from the caches on the loop, else through the door.

    The decision is written once (``authenticate_http``); it runs first over
    the caches and, when they cannot answer, again from the start over the
    service in the blocking pool. The first run has no effect to undo: the
    only write (``count_failure``) is where it stops.
    """

    def __init__(self, service: PairingService, blocking: Blocking) -> None:
        self._service = service
        self._blocking = blocking
        self._cached = _Cached(service, self._refresh_lockout)
        self._refreshing: set[str] = set()
        self._epoch = service.epoch
        self._clock = service.clock

    async def __call__(self, scope: Scope) -> AuthState:
        """Who the caller of ``scope`` is; ``StoreError`` when the store cannot say."""
        known = self.known(scope)
        return known if known is not None else await self.from_store(scope)

    def known(self, scope: Scope) -> AuthState | None:
        """The caller from the caches alone, on the loop; None when only the store can say.

        The guard calls this first, so the common request (a recently seen
        token) costs neither a thread hop nor a coroutine.

        On a keep-alive connection whose request repeats the previous one's
        header bytes (its resolution came from the ``Connection`` memo), the
        previous decision stands while the caches' ``Epoch`` has not moved (no
        device forgotten or changed, no lockout started) and for at most
        ``AUTH_MEMO_SECONDS``, and no longer than the device's last-seen note
        needs no renewal (``TOUCH_RESOLUTION``), so last-seen times are as
        precise as without it. Only decisions that record nothing are kept:
        local, paired, and anonymous without a credential.
        """
        connection = scope.get(CONNECTION_KEY)
        if isinstance(connection, Connection) and connection.last is not None:
            kept = connection.auth
            if (
                kept is not None
                and kept[0] is connection.last
                and kept[0][5] is scope[RESOLUTION_KEY]  # this very request's resolution
                and kept[1] == self._epoch.value
                and self._clock() < kept[2]
            ):
                return kept[3]
            epoch, resolved = self._epoch.value, connection.last
        else:
            connection = None
        try:
            state = authenticate_http(self._cached, scope)
        except _NeedsStore:
            return None
        if connection is not None and state.denial is None and state.retry_after == 0:
            until = self._clock() + AUTH_MEMO_SECONDS
            if state.device is not None:  # kept no longer than a new last-seen note would wait
                noted = self._service.noted_at(state.device.id)
                until = min(until, noted + TOUCH_RESOLUTION) if noted is not None else 0.0
            connection.auth = (resolved, epoch, until, state)
        return state

    async def from_store(self, scope: Scope) -> AuthState:
        """The whole decision again, through the blocking door; ``StoreError`` if it is down."""
        return await self._blocking.run(authenticate_http, self._service, scope)

    def _refresh_lockout(self, client_key: str) -> None:
        if client_key in self._refreshing:
            return
        self._refreshing.add(client_key)

        def refresh() -> None:
            try:
                self._service.lockout_remaining(client_key)  # re-reads and remembers
            finally:
                self._refreshing.discard(client_key)

        self._blocking.spawn(refresh)


def _header(scope: Scope, wanted: bytes) -> list[str]:
    return [value.decode("latin-1") for name, value in scope["headers"] if name == wanted]


def cross_site_refusal(
    scope: Scope, resolution: Resolution, allowed: frozenset[str], *, require_json: bool = True
) -> str | None:
    """Why a cookie-authenticated write must be refused, or None when it may go ahead.

    The browser attaches the session cookie to requests that pages of other
    origins make, and ``SameSite=Strict`` only keeps out other *sites*: a page
    on a sibling host name or another port of the same host is same-site. So
    the request must prove it comes from the dashboard itself: an ``Origin``
    that is exactly the gateway's own origin as the client reached it (or an
    ``auth.allowed_origins`` entry), a ``Sec-Fetch-Site`` of ``same-origin`` or
    ``none`` where the browser sends one, and (for Edge's own API,
    ``require_json``) a JSON body type, which no HTML form can send and which a
    script of another origin can only send after a CORS preflight the gateway
    never answers. An app the operator put on the control origin keeps its own
    forms (any body type), but they too must come from that origin.
    """
    origins = _header(scope, b"origin")
    if len(origins) != 1:
        return (
            "A write authenticated by the session cookie must carry exactly one Origin header; "
            f"this request carried {len(origins)}."
        )
    origin = normalise_origin(origins[0])
    own = own_origin(resolution)
    if origin is None or (origin != own and origin not in allowed and origin + "/" not in allowed):
        return (
            f"A write authenticated by the session cookie came from origin {origins[0][:100]!r}, "
            f"not from the gateway's own origin {own!r} nor from auth.allowed_origins."
        )
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site and fetch_site[0].strip().lower() not in SAME_SITE_FETCHES:
        return (
            f"The browser marked this write Sec-Fetch-Site: {fetch_site[0][:40]!r}; only "
            "'same-origin' or 'none' may use the session cookie."
        )
    if not require_json:
        return None
    content_types = _header(scope, b"content-type")
    media = content_types[0].partition(";")[0].strip().lower() if content_types else ""
    if media != "application/json":
        return (
            "A write authenticated by the session cookie must send Content-Type: "
            f"application/json (got {media[:60] or 'none'!r})."
        )
    return None


def cross_site_response(detail: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The 403 answer to a cookie-authenticated write that failed ``cross_site_refusal``."""
    denial = Denial.CROSS_SITE_WRITE
    return http_answer(denial, f"{detail} {denial.next_step}")


def denial_response(
    auth: AuthState, *, forbidden: bool = False
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The 401/403 answer for a protected route: JSON body and ``WWW-Authenticate``."""
    denial = Denial.ROLE_FORBIDDEN if forbidden else auth.denial or Denial.CREDENTIALS_MISSING
    extra: list[tuple[bytes, bytes]] = []
    if denial.http_status == 401:
        challenge = 'Bearer realm="edge"'
        if auth.denial is not None:
            challenge += ', error="invalid_token"'
        extra.append((b"www-authenticate", challenge.encode()))
    numbers: dict[str, Any] = {}  # what a client acts on: a countdown, the tries left
    detail = http_detail(denial)
    if auth.retry_after > 0:
        numbers["retry_after"] = int(auth.retry_after) + 1
        extra.append((b"retry-after", str(numbers["retry_after"]).encode()))
    if auth.tries_left is not None and not forbidden:
        numbers["tries_left"] = left = auth.tries_left
        tries = "1 try" if left == 1 else f"{left} tries"
        locked = f"This address is now locked out for {numbers.get('retry_after', 0)} s"
        detail += (
            f" {locked}." if left <= 0 else f" {tries} left before this address is locked out."
        )
    status, headers, body = http_answer(denial, detail, headers=tuple(extra))
    if numbers:
        body = json.dumps({**json.loads(body), **numbers}).encode()
    return status, headers, body


def store_unavailable(exc: Exception) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """503 while the pairing store cannot be reached to check a credential."""
    logger.error("credential check could not reach the pairing store: %s", exc)
    return http_answer(Rejection.STORE_UNAVAILABLE, headers=((b"retry-after", b"2"),))


async def admit_websocket(
    scope: Scope,
    send: Send,
    started: float,
    *,
    authenticate: Authenticator,
    live: Live,
    metrics: Metrics,
) -> AuthState | None:
    """Judge a WebSocket handshake for an upstream: the HTTP credential rules plus the Origin.

    The guard middleware passes WebSocket scopes through (the control socket
    does its own handshake), so an upstream route asks here before it relays.
    A refusal is counted, answered (``deny_websocket``) and ``None`` returned;
    the client's ``websocket.connect`` has been received already.
    """
    resolution = scope[RESOLUTION_KEY]
    origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
    try:
        auth = await authenticate(scope)
    except StoreError as exc:
        metrics.observe_request("websocket", "denied", time.perf_counter() - started)
        close = close_frame(Rejection.STORE_UNAVAILABLE)
        await deny_websocket(scope, send, store_unavailable(exc), close)
        return None
    if not origin_allowed(origin, resolution, live.config.allowed_origins):
        metrics.auth_failure(Denial.ORIGIN_NOT_ALLOWED.metric_label)
        metrics.observe_request("websocket", "denied", time.perf_counter() - started)
        detail = f"origin {origin!r} may not open this socket"
        await refuse_websocket(scope, send, Rejection.ORIGIN_FORBIDDEN, detail)
        return None
    if auth.state == "anonymous":
        denial = auth.denial or Denial.CREDENTIALS_MISSING
        metrics.auth_failure(denial.metric_label)
        metrics.observe_request("websocket", "denied", time.perf_counter() - started)
        await deny_websocket(scope, send, denial_response(auth), close_frame(denial))
        return None
    return auth


def is_public(path: str) -> bool:
    return path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIXES)


class GuardMiddleware:
    """``settings`` are the ones the app started with: the routes the guard stands for."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticator,
        live: Live,
        metrics: Metrics,
        settings: Settings,
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.live = live
        self.metrics = metrics
        # Fixed at start, like the route it stands for (a reload does not add or move it).
        self.metrics_path = settings.metrics.path if settings.metrics.on_gateway_port else None
        # On an upstream's own host every path is the app's, so none is public.
        self.upstream_hosts = frozenset(u.host for u in settings.upstreams if u.host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        metrics = self.metrics
        path: str = scope["path"]
        app_host = bool(self.upstream_hosts) and (
            hostname_of(scope[RESOLUTION_KEY].host) in self.upstream_hosts
        )
        if not app_host and (path == self.metrics_path or path.startswith(SELF_GUARDED_PREFIXES)):
            await self.app(scope, receive, send)
            return
        auth = self.authenticate.known(scope)
        if auth is None:
            try:
                auth = await self.authenticate.from_store(scope)
            except StoreError as exc:
                status, headers, body = store_unavailable(exc)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        scope[AUTH_KEY] = auth
        if auth.state == "anonymous" and (app_host or not is_public(path)):
            await self._refuse(scope, send, auth, started)
            return
        if (
            auth.state == "paired"
            and path.startswith(ADMIN_PREFIXES)
            and auth.device is not None
            and auth.device.role != Role.ADMIN
        ):
            await self._refuse(scope, send, auth, started, forbidden=True)
            return
        if auth.via_cookie and scope["method"] not in SAFE_METHODS:
            # Every write the cookie authenticates: Edge's API and any app on this origin.
            detail = cross_site_refusal(
                scope,
                scope[RESOLUTION_KEY],
                self.live.config.allowed_origins,
                require_json=path.startswith(CONTROL_WRITE_PREFIXES),
            )
            if detail is not None:
                await self._refuse_cross_site(scope, send, detail, started)
                return
        decision = "public" if auth.state == "anonymous" else auth.state
        # A bad or locked-out credential on a public route is still a refused attempt.
        failure = auth.denial.metric_label if auth.denial is not None else None
        if failure is not None:
            metrics.auth_failure(failure)
        if not self.live.config.settings.logging.access_log:
            # the common case: no access log, so nothing needs the status
            try:
                await self.app(scope, receive, send)
            finally:
                metrics.observe_request("http", decision, time.perf_counter() - started)
            return
        status_holder: list[int] = []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            metrics.observe_request("http", decision, elapsed)
            status = status_holder[0] if status_holder else 500
            extra = {"reason": failure} if failure is not None else {}
            self._log(scope, decision, status, elapsed, **extra)

    async def _refuse(
        self, scope: Scope, send: Send, auth: AuthState, started: float, *, forbidden: bool = False
    ) -> None:
        status, headers, body = denial_response(auth, forbidden=forbidden)
        reason = Denial.ROLE_FORBIDDEN if forbidden else auth.denial or Denial.CREDENTIALS_MISSING
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        elapsed = time.perf_counter() - started
        self.metrics.auth_failure(reason.metric_label)
        self.metrics.observe_request("http", "denied", elapsed)
        self._log(scope, "denied", status, elapsed, reason=reason.metric_label)

    async def _refuse_cross_site(
        self, scope: Scope, send: Send, detail: str, started: float
    ) -> None:
        status, headers, body = cross_site_response(detail)
        label = Denial.CROSS_SITE_WRITE.metric_label
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        elapsed = time.perf_counter() - started
        self.metrics.auth_failure(label)
        self.metrics.observe_request("http", "denied", elapsed)
        self._log(scope, "denied", status, elapsed, reason=label)

    def _log(
        self, scope: Scope, decision: str, status: int, elapsed: float, **extra: object
    ) -> None:
        resolution = scope[RESOLUTION_KEY]
        logger.info(
            "%s %s %d",
            scope["method"],
            scope["path"],
            status,
            extra={
                "kind": "http",
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "client": resolution.client_ip,
                "decision": decision,
                "ms": round(elapsed * 1000, 2),
                **extra,
            },
        )
