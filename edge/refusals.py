"""Every refusal Edge gives, with its close code, HTTP answer and next step, in one table.

A close reason such as ``pairing required`` is a contract with clients (they
match on it), the snake_case ``reason`` a contract with dashboards (it is the
``reason`` label of ``edge_auth_failures_total`` and the ``reason`` of an HTTP
error body), and whether a refusal counts towards the per-address lockout is a
security decision. Keeping all of them, and the words a person reads, side by
side makes a new refusal impossible to half-add and its prose impossible to
fork: the dashboard reads this table from ``GET /api/refusals`` instead of
keeping a copy, and the docs are checked against it.

Two enums share one row type. ``Denial`` is who the caller is not (a missing
or wrong credential, a foreign origin, a missing role): what the pairing
service decides and the metric counts. ``Rejection`` is what the gateway
cannot do for a caller it does not doubt (an upstream down, a path it will
not forward, its store unreachable). Both render the same way: an HTTP body
``{"error", "reason", "detail"}`` (``http_body``) and a WebSocket close frame
(``close_frame``). It lives at the top of the package, not under ``pairing/`` or ``gateway/``: the
pairing service returns denials, the ASGI layer renders every row, and neither may
import the other's layer. It imports only the standard library and ``edge.causes``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from edge.causes import causes_table

# RFC 6455 §5.5: a control frame's payload is at most 125 bytes, two of them the code.
MAX_CLOSE_REASON_BYTES = 123

CLOSE_POLICY = 1008  # the refusals the client must fix itself
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_GATEWAY = 1014


@dataclass(frozen=True, slots=True)
class ClientHint:
    """What a client of the control socket does after this close (the dashboard follows it).

    ``state`` is the dashboard's state card (``error``, ``token-needed``,
    ``connecting``, ``waiting``, ``revoked``); ``next`` is ``ask-token`` (ask
    for the gateway token), ``retry-now`` (reconnect at once), ``backoff``
    (reconnect with growing delays), ``wait`` (pairing pending: reconnect
    until approved), ``manual`` (stop until the person retries) or
    ``start-over`` (offer a new device key); ``drop`` names the stored
    credentials (``session``, ``gatewayToken``, ``invite``) the refusal
    proves useless.
    """

    state: str
    next: str
    drop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    """One row of the table.

    ``code`` is the snake_case reason (HTTP body ``reason``, metric label, log
    field); ``error`` the body's broader ``error``; ``title`` and ``message``
    are for the person in front of the screen, ``next_step`` for whoever can
    fix it. ``detail`` is the HTTP body's ``detail`` when the caller has
    nothing more specific (default: the close reason and the next step).
    ``client`` is set for every refusal that can close the control socket.
    ``body_reason`` False leaves ``reason`` out of the body, for the one answer
    whose two-key shape clients pin (``HEADER_UNSENDABLE``).
    """

    code: str
    close_reason: str
    title: str
    message: str
    next_step: str
    status: int = 401
    error: str = "unauthorized"
    close_code: int = CLOSE_POLICY
    counts_as_failure: bool = False
    detail: str | None = None
    client: ClientHint | None = None
    body_reason: bool = True

    def __post_init__(self) -> None:
        if len(self.close_reason.encode("utf-8")) > MAX_CLOSE_REASON_BYTES:
            raise ValueError(f"close reason {self.close_reason!r} is over 123 bytes")


class _Table(enum.Enum):
    """Accessors shared by both enums; a member's value is its ``Refusal`` row."""

    _value_: Refusal

    @property
    def row(self) -> Refusal:
        return self._value_

    @property
    def reason(self) -> str:
        """The WebSocket close reason, exactly as the contract spells it."""
        return self._value_.close_reason

    @property
    def metric_label(self) -> str:
        """The snake_case reason: ``edge_auth_failures_total``'s label, the body's ``reason``."""
        return self._value_.code

    @property
    def close_code(self) -> int:
        return self._value_.close_code

    @property
    def counts_as_failure(self) -> bool:
        """Whether this refusal feeds the per-address lockout (a guess at a secret)."""
        return self._value_.counts_as_failure

    @property
    def http_status(self) -> int:
        """403 for a known caller lacking a right, 401 for one not known, 4xx/5xx for the rest."""
        return self._value_.status

    @property
    def next_step(self) -> str:
        """One sentence telling the operator or user what to do about it."""
        return self._value_.next_step


class Denial(_Table):
    """A refusal of who the caller is; each one counts in ``edge_auth_failures_total``."""

    ORIGIN_NOT_ALLOWED = Refusal(
        code="origin_not_allowed",
        close_reason="origin not allowed",
        title="This page's address is not allowed",
        message=(
            "The gateway accepts its control connection only from its own address. Open the Control"
            " UI at the gateway's own address (the one your reverse proxy serves), or ask the "
            "operator to add this page's origin to auth.allowed_origins."
        ),
        next_step=(
            "Open the dashboard from the gateway's own address, or add this page's origin to "
            "auth.allowed_origins."
        ),
        client=ClientHint("error", "manual"),
    )
    INVALID_HANDSHAKE = Refusal(
        code="invalid_handshake",
        close_reason="invalid handshake",
        title="The gateway could not read the handshake",
        message=(
            "Reload the page. If it keeps happening, this page and the gateway are different "
            "versions: clear the browser cache or update the gateway."
        ),
        next_step="Update the client: its connect frame does not follow the Edge control protocol.",
        client=ClientHint("error", "manual"),
    )
    HANDSHAKE_TIMEOUT = Refusal(
        code="handshake_timeout",
        close_reason="handshake timeout",
        title="The handshake timed out",
        message=(
            "The gateway did not receive this page's answer in time (slow network or a suspended "
            "tab)."
        ),
        next_step=(
            "Reconnect; the client must answer the challenge within pairing.handshake_timeout "
            "seconds."
        ),
        client=ClientHint("connecting", "backoff"),
    )
    GATEWAY_TOKEN_MISSING = Refusal(
        code="gateway_token_missing",
        close_reason="unauthorized: gateway token missing",
        title="Gateway token needed",
        message=(
            "This browser is not paired with the gateway yet. Paste the gateway token to ask for "
            "approval; on the gateway host, `edge token show` prints it."
        ),
        next_step="Enter the gateway token (`edge token show` on the gateway host prints it).",
        client=ClientHint("token-needed", "ask-token", ("session",)),
    )
    GATEWAY_TOKEN_MISMATCH = Refusal(
        code="gateway_token_mismatch",
        close_reason="unauthorized: gateway token mismatch",
        counts_as_failure=True,
        title="That gateway token is wrong",
        message=(
            "The token does not match this gateway's. Check for a missing character or a rotated "
            "token: run `edge token show` on the gateway host and paste it again."
        ),
        next_step=(
            "Check the gateway token (`edge token show` on the gateway host); it may have been "
            "rotated."
        ),
        client=ClientHint("token-needed", "ask-token", ("gatewayToken",)),
    )
    DEVICE_TOKEN_INVALID = Refusal(
        code="device_token_invalid",
        close_reason="unauthorized: device token invalid",
        counts_as_failure=True,
        title="This device's token is no longer valid",
        message=(
            "It was rotated, or the gateway's data was reset. Asking again with the gateway token; "
            "without one, paste it below."
        ),
        next_step=(
            "Forget the stored device token and connect with the gateway token to pair again."
        ),
        client=ClientHint("connecting", "retry-now", ("session",)),
    )
    INVITE_INVALID = Refusal(
        code="invite_invalid",
        close_reason="unauthorized: invite invalid",
        counts_as_failure=True,
        title="The invite link is not valid",
        message=(
            "It expired, was already used or was cancelled. Ask an admin for a new invite link, or "
            "paste the gateway token."
        ),
        next_step="Ask an operator for a new invite; each invite works once and expires.",
        client=ClientHint("token-needed", "ask-token", ("invite",)),
    )
    RATE_LIMITED = Refusal(
        code="rate_limited",
        close_reason="unauthorized: too many failed attempts",
        title="Too many failed attempts",
        message=(
            "After repeated wrong credentials the gateway locked out your address for a few minutes"
            " (auth.rate_limit). Paired devices keep working; this page tries again by itself."
        ),
        next_step=(
            "Wait for the lockout to end (Retry-After) or have an operator lift it (`edge auth "
            "unlock <address>`), then retry with the right token."
        ),
        client=ClientHint("error", "manual"),
    )
    DEVICE_IDENTITY_REQUIRED = Refusal(
        code="device_identity_required",
        close_reason="device identity required",
        title="Device identity missing",
        message=(
            "The gateway needs this browser's device key and none arrived. Reload the page; if it "
            "persists, use a current browser or pair from a terminal with `edge pair --url URL "
            "--token T`."
        ),
        next_step=(
            "Use a client that creates a device key; browsers need HTTPS or localhost for "
            "WebCrypto."
        ),
        client=ClientHint("error", "manual"),
    )
    DEVICE_IDENTITY_MISMATCH = Refusal(
        code="device_identity_mismatch",
        close_reason="device identity mismatch",
        title="Device identity does not match",
        message=(
            "The stored device key does not match the device id or token the gateway knows. Start "
            "over as a new device; an operator approves it again."
        ),
        next_step="Clear the client's stored device key and token, then pair again.",
        client=ClientHint("error", "start-over"),
    )
    DEVICE_SIGNATURE_INVALID = Refusal(
        code="device_signature_invalid",
        close_reason="device signature invalid",
        counts_as_failure=True,
        title="Device signature rejected",
        message=(
            "The gateway could not verify this browser's signature. Start over as a new device; if "
            "it persists, pair from a terminal with `edge pair --url URL --token T`."
        ),
        next_step=(
            "Clear the client's stored device key and pair again; its signature does not verify."
        ),
        client=ClientHint("error", "start-over"),
    )
    DEVICE_SIGNATURE_EXPIRED = Refusal(
        code="device_signature_expired",
        close_reason="device signature expired",
        title="The clocks disagree",
        message=(
            "This computer's clock and the gateway's differ by more than 2 minutes, so the "
            "signature counted as expired. Turn on automatic time (NTP) on both, then try again."
        ),
        next_step=(
            "Fix the clock of the client or the gateway host (they differ by more than two "
            "minutes)."
        ),
        client=ClientHint("error", "manual"),
    )
    PAIRING_REQUIRED = Refusal(
        code="pairing_required",
        close_reason="pairing required",
        title="Waiting for approval",
        message="An operator has to approve this device before it can connect.",
        next_step=(
            "Ask an operator to run `edge devices approve <REQUEST>` or approve it from an admin "
            "dashboard."
        ),
        client=ClientHint("waiting", "wait"),
    )
    DEVICE_REVOKED = Refusal(
        code="device_revoked",
        close_reason="device revoked",
        title="This device was revoked",
        message=(
            "An operator revoked this device, so its token no longer works. To use this browser "
            "again, start over: it asks to pair as a new device and an operator approves it."
        ),
        next_step=(
            "This device was revoked; ask an operator to approve a new pairing request for it."
        ),
        client=ClientHint("revoked", "start-over", ("session",)),
    )
    CREDENTIALS_MISSING = Refusal(
        code="credentials_missing",
        close_reason="unauthorized: credentials missing",
        error="pairing_required",
        title="Not paired yet",
        message="This client is not local and sent no device token.",
        detail=(
            "This client is not local and sent no device token. Pair it first: open the "
            "dashboard and paste the gateway token, or run `edge pair --url <gateway URL> "
            "--token <gateway token>`; once an operator approves it (`edge devices approve "
            "<REQUEST>`), send `Authorization: Bearer <device token>`."
        ),
        next_step="Send `Authorization: Bearer <device token>` or sign in through the dashboard.",
    )
    ROLE_FORBIDDEN = Refusal(
        code="role_forbidden",
        close_reason="forbidden: admin role required",
        status=403,
        error="forbidden",
        title="Admin role required",
        message="This device is paired as a user; the request needs an admin device.",
        detail="Use an admin device, or ask an operator to approve this device as admin.",
        next_step="Use an admin device, or ask an operator to approve this device as admin.",
    )
    METRICS_TOKEN_MISMATCH = Refusal(
        code="metrics_token_mismatch",
        close_reason="unauthorized: metrics token mismatch",
        counts_as_failure=True,
        title="Wrong metrics token",
        message="The scraper sent a bearer token that is not metrics.bearer_token.",
        next_step=(
            "Give the scraper the value of metrics.bearer_token (Authorization: Bearer <token>), or"
            " scrape from metrics.allowed_networks."
        ),
    )
    CROSS_SITE_WRITE = Refusal(
        code="cross_site_write",
        close_reason="forbidden: cross-site request",
        status=403,
        error="forbidden",
        title="Cross-site write refused",
        message="A change authenticated by the session cookie came from another site.",
        next_step=(
            "Make the change from the dashboard at the gateway's own address (or an origin listed "
            "in auth.allowed_origins) with a JSON body, or send `Authorization: Bearer <device "
            "token>` instead of the session cookie."
        ),
    )

    @classmethod
    def from_reason(cls, reason: str) -> Denial | None:
        """The denial a client received as a close reason, or None if it is not one of ours."""
        return _BY_REASON.get(reason)


class Rejection(_Table):
    """A refusal of what was asked, of a caller the gateway does not doubt."""

    STORE_UNAVAILABLE = Refusal(
        code="store_unavailable",
        close_reason="pairing store unavailable, try again",
        status=503,
        error="unavailable",
        close_code=CLOSE_TRY_AGAIN,
        title="The gateway cannot reach its pairing store",
        message="It cannot check credentials right now and asked clients to come back shortly.",
        next_step="Check the store (`edge doctor`, the Redis server or the data directory); "
        "clients retry on their own.",
        detail="The gateway cannot reach its pairing store right now; retry shortly.",
        client=ClientHint("connecting", "backoff"),
    )
    SERVER_RESTARTING = Refusal(
        code="server_restarting",
        close_reason="server restarting",
        status=503,
        error="unavailable",
        close_code=CLOSE_RESTART,
        title="The gateway is restarting",
        message="It will be back shortly.",
        next_step="Reconnect; the next gateway process answers.",
        client=ClientHint("connecting", "backoff"),
    )
    FRAME_TOO_LARGE = Refusal(
        code="frame_too_large",
        close_reason="frame too large",
        status=413,
        error="bad_request",
        close_code=CLOSE_TOO_BIG,
        title="A message was too large",
        message=(
            "The gateway closed the connection because a message exceeded its limit (64 KiB before "
            "pairing). Reload the page; if it persists, report it with the gateway log."
        ),
        next_step="Send smaller frames; the limits are fixed by the control protocol.",
        client=ClientHint("error", "manual"),
    )
    PATH_REFUSED = Refusal(
        code="path_refused",
        close_reason="invalid request path",
        status=400,
        error="bad_request",
        title="The request path was refused",
        message="The path holds an encoded slash, a backslash or dot segments aimed past a prefix.",
        next_step="Send the path the link resolves to, with '/' between segments.",
    )
    PATH_UNFORWARDABLE = Refusal(
        code="path_unforwardable",
        close_reason="invalid request path",
        status=400,
        error="bad_request",
        title="The request path cannot be forwarded",
        message="The path or query holds bytes that cannot go on a request line.",
        next_step="Percent-encode every byte outside visible ASCII in the path and query.",
        detail="the request path cannot be forwarded",
    )
    HEADER_UNSENDABLE = Refusal(
        code="header_unsendable",
        close_reason="invalid request header",
        status=400,
        error="bad_request",
        title="A request header cannot be forwarded",
        message=(
            "A header value is not UTF-8, and the upstream client can only send UTF-8 unchanged."
        ),
        next_step="Send header values in UTF-8 (or ASCII).",
        body_reason=False,
    )
    WEBSOCKET_NOT_FORWARDED = Refusal(
        code="websocket_not_forwarded",
        close_reason="not found",
        status=404,
        error="not_found",
        title="This upstream takes no WebSockets",
        message="The upstream the path or host names does not forward WebSocket upgrades.",
        next_step="Set upstreams[].websocket: true to forward them.",
    )
    ORIGIN_FORBIDDEN = Refusal(
        code="origin_not_allowed",
        close_reason="origin not allowed",
        status=403,
        error="forbidden",
        title="This page's address may not open the app's socket",
        message="An upstream's WebSocket was opened from an origin that is not the gateway's own.",
        next_step=Denial.ORIGIN_NOT_ALLOWED.next_step,
    )
    UPSTREAM_UNREACHABLE = Refusal(
        code="bad_gateway",
        close_reason="bad gateway",
        status=502,
        error="bad_gateway",
        close_code=CLOSE_BAD_GATEWAY,
        title="The upstream is unreachable",
        message="The upstream refused the connection or answered with something that is not HTTP.",
        next_step="Check that the upstream is running and that upstreams[].url is right.",
    )
    UPSTREAM_TIMEOUT = Refusal(
        code="upstream_timeout",
        close_reason="bad gateway",
        status=504,
        error="upstream_timeout",
        close_code=CLOSE_BAD_GATEWAY,
        title="The upstream did not answer in time",
        message="The upstream took longer than upstreams[].timeout (or connect_timeout).",
        next_step="Raise upstreams[].timeout (or connect_timeout) if it is just slow.",
    )
    UPSTREAM_REFUSED = Refusal(
        code="upstream_refused",
        close_reason="bad gateway",
        status=502,
        error="upstream_refused",
        close_code=CLOSE_BAD_GATEWAY,
        title="The upstream refused the WebSocket",
        message="The upstream answered the WebSocket handshake with an HTTP status.",
        next_step="Check the upstream's own log for why it refused the upgrade.",
    )
    INVALID_ROLE = Refusal(
        code="invalid_role",
        close_reason="invalid role",
        status=400,
        error="bad_request",
        title="The forward-auth query names an unknown role",
        message="The proxy's forward-auth sub-request asked for a role that does not exist.",
        next_step="Set role=admin or role=user in the proxy configuration, and do not pass the "
        "visitor's query on (see docs/reverse-proxies.md).",
        detail="the forward-auth query names an unknown role; the proxy configuration may set "
        "role=admin or role=user, and must not pass the visitor's query on (see "
        "docs/reverse-proxies.md)",
    )
    METRICS_FORBIDDEN = Refusal(
        code="metrics_forbidden",
        close_reason="metrics forbidden",
        title="Metrics are not served to this caller",
        message="The metrics endpoint answers local clients, metrics.allowed_networks and "
        "holders of metrics.bearer_token.",
        next_step=Denial.METRICS_TOKEN_MISMATCH.next_step,
        detail="Metrics are served to local clients, to metrics.allowed_networks, and to "
        "holders of metrics.bearer_token (Authorization: Bearer <token>); device tokens do "
        "not open them.",
    )


_BY_REASON: dict[str, Denial] = {denial.reason: denial for denial in Denial}

AnyRefusal = Denial | Rejection


# -- rendering ----------------------------------------------------------------------------------


def error_body(error: str, reason: str | None, detail: str) -> bytes:
    """The one shape of every HTTP error body: ``{"error", "reason", "detail"}``."""
    body = {"error": error, "reason": reason, "detail": detail}
    if reason is None:
        del body["reason"]
    return json.dumps(body).encode()


def http_detail(refusal: AnyRefusal) -> str:
    row = refusal.row
    return row.detail if row.detail is not None else f"{row.close_reason}. {row.next_step}"


def http_body(refusal: AnyRefusal, detail: str | None = None) -> bytes:
    """The JSON body for ``refusal``; ``detail`` replaces the row's when the caller knows more."""
    row = refusal.row
    reason = row.code if row.body_reason else None
    return error_body(row.error, reason, detail if detail is not None else http_detail(refusal))


JSON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
)


def http_answer(
    refusal: AnyRefusal,
    detail: str | None = None,
    *,
    status: int | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``(status, headers, body)`` for ``refusal``: its JSON body, ``no-store``, and ``headers``.

    ``status`` stands in for the row's where the status is the upstream's own
    (an upstream that refused a WebSocket handshake with 403 is answered 403).
    """
    return (
        refusal.http_status if status is None else status,
        [*JSON_HEADERS, *headers],
        http_body(refusal, detail),
    )


def close_frame(refusal: AnyRefusal) -> tuple[int, str]:
    """The WebSocket close code and reason for ``refusal`` (``Refusal`` checks the 123 bytes)."""
    return refusal.close_code, refusal.reason


def ui_table() -> dict[str, Any]:
    """The refusals the control socket can close with, as the dashboard reads them.

    Keyed by close reason (what the browser's close event carries): the words to
    show and what the page does next (``ClientHint``); ``causes`` (``edge.causes``) beside.
    """
    reasons: dict[str, Any] = {}
    for refusal in (*Denial, *Rejection):
        row = refusal.row
        if row.client is None:
            continue
        reasons[row.close_reason] = {
            "reason": row.code,
            "closeCode": row.close_code,
            "title": row.title,
            "message": row.message,
            "nextStep": row.next_step,
            "state": row.client.state,
            "next": row.client.next,
            "drop": list(row.client.drop),
        }
    return {"closeReasons": reasons, "causes": causes_table()}
