"""The one header policy for everything Edge hands to an upstream (DESIGN "Identity to upstreams").

Pure functions over ``(name, value)`` byte pairs, used by the HTTP and the
WebSocket relay alike and mirrored by the shipped proxy files in ``deploy/``.

Names are compared in their *canonical* form: lowercased, with ``_`` read as
``-``. CGI-style servers (wsgiref, older gunicorn, Puma) merge the two into
one ``HTTP_REMOTE_USER`` variable, so a client's ``Remote_User`` is the same
header as Edge's ``Remote-User`` to the app behind. Every forwarding and
identity family is dropped in that form before Edge sets its own, so there is
no spelling a client can use to speak for Edge.

Cookies are read here too, by one parser: the guard authenticates with the
session cookie this module finds, and the relay strips exactly the cookies it
finds, so no ``Cookie`` spelling can authenticate and still be forwarded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import quote

from edge.gateway.context import AuthState
from edge.net import Resolution

Header = tuple[bytes, bytes]

SESSION_COOKIE = "edge_session"
# The browser may be handed the cookie under a prefix that tightens its scope
# (``__Host-`` under https); all of these are Edge's and none reaches an upstream.
_COOKIE_PREFIXES = ("__Host-", "__Secure-")
EDGE_COOKIES = frozenset({SESSION_COOKIE, *(p + SESSION_COOKIE for p in _COOKIE_PREFIXES)})

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",  # uvicorn has already answered 100-continue
    }
)
# Canonical names (see ``canonical``) that only Edge may set.
FORWARDING_EXACT = frozenset(
    {
        b"forwarded",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"x-cluster-client-ip",
        b"x-remote-user",
        b"x-remote-email",
        b"x-remote-groups",
    }
)
# Every X-Forwarded-* (For, Proto, Host, Port, Prefix, User, Email, Groups, ...),
# Edge's own families, and the identity headers of common forward-auth
# services (oauth2-proxy's X-Auth-Request-*, Grafana's X-WEBAUTH-*, Authentik).
FORWARDING_PREFIXES = (
    b"x-forwarded-",
    b"remote-",
    b"x-edge-",
    b"x-auth-request-",
    b"x-webauth-",
    b"x-authentik-",
)

# Edge's id of the request (edge.request_ids); a client's own is replaced, not reserved.
REQUEST_ID = b"x-request-id"
_FORWARDED_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
# Printable ASCII except '%': what may stay as it is in a header value.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
# What a host (name, IPv4, [IPv6], optional port) may contain when Edge repeats it.
_HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")


def canonical(name: bytes) -> bytes:
    """A header name as CGI-style servers see it: lowercased, ``_`` read as ``-``."""
    return name.lower().replace(b"_", b"-")


def is_reserved(name: bytes) -> bool:
    """Whether a header, in any spelling, is a forwarding or identity header only Edge may set."""
    key = canonical(name)
    return key in FORWARDING_EXACT or key.startswith(FORWARDING_PREFIXES)


def connection_named(headers: Iterable[Header]) -> frozenset[bytes]:
    """The canonical names the ``Connection`` header lists (a proxy must drop those)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(canonical(t.strip()) for t in value.split(b",") if t.strip())
    return frozenset(named)


def end_to_end(headers: Iterable[Header]) -> list[Header]:
    """Headers without hop-by-hop ones and without those the ``Connection`` header names."""
    headers = list(headers)
    dropped = HOP_BY_HOP | connection_named(headers)
    return [(name, value) for name, value in headers if canonical(name) not in dropped]


# -- cookies -----------------------------------------------------------------------------


def _cookie(part: bytes) -> tuple[bytes, bytes]:
    name, has_value, content = part.strip().partition(b"=")
    if not has_value:
        return b"", name
    content = content.strip()
    if len(content) >= 2 and content[:1] == content[-1:] == b'"':
        content = content[1:-1]
    return name.strip(), content


def cookie_parts(value: bytes) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    """One ``Cookie`` header as its ``;``-separated parts, each with the cookies in it.

    Both ``;`` (RFC 6265) and ``,`` (RFC 2965, which old clients and some
    proxies still join with) separate cookies: neither may appear in a cookie
    value (RFC 6265 ``cookie-octet``), and a parser that honoured one but not
    the other would let a token hide behind it. So each part is also split on
    ``,`` into ``(name, value)`` pairs (a value in double quotes unquoted, a
    part with no ``=`` a cookie with an empty name), while the part's own text
    is kept for forwarding, so an app's non-conforming value with a comma in
    it reaches the app unchanged.
    """
    parts: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []
    for part in value.split(b";"):
        part = part.strip()
        if part:
            parts.append((part, [_cookie(p) for p in part.split(b",") if p.strip()]))
    return parts


def is_edge_cookie(name: bytes) -> bool:
    """Whether a cookie name is Edge's session cookie, under any of its prefixes."""
    return name.decode("latin-1") in EDGE_COOKIES


def session_cookie_name(*, secure: bool) -> str:
    """The session cookie's name: ``__Host-`` prefixed under https.

    A ``__Host-`` cookie is only accepted by browsers when it is Secure, has
    path ``/`` and no Domain, so no sibling host and no plain-http page of the
    same site can set or shadow it.
    """
    return f"__Host-{SESSION_COOKIE}" if secure else SESSION_COOKIE


def session_cookie(headers: Iterable[Header]) -> str | None:
    """The session token from the ``Cookie`` headers, as ``cookie_parts`` reads them."""
    for name, value in headers:
        if name.lower() == b"cookie":
            for _, cookies in cookie_parts(value):
                for cookie, content in cookies:
                    if content and is_edge_cookie(cookie):
                        return content.decode("latin-1")
    return None


def session_token(headers: Iterable[Header], *, secure: bool) -> str | None:
    """The session cookie's device token, as authentication reads it.

    The same parser as stripping (``cookie_parts``), with two rules more.
    Under https only ``__Host-edge_session`` counts: a browser lets no sibling
    host and no plain-http page set that name, so a cookie planted under
    another spelling never authenticates or shadows it (over plain http, where
    browsers cannot keep ``__Host-`` cookies apart, ``edge_session`` counts
    too). And the cookie must be unambiguous: two different tokens (a sibling
    host tossed one in with ``Domain=``, or hid one behind a comma in another
    cookie) mean neither is believed.
    """
    names = {f"__Host-{SESSION_COOKIE}".encode()}
    if not secure:
        names.add(SESSION_COOKIE.encode())
    found: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"cookie":
            for _, cookies in cookie_parts(value):
                found.update(content for cookie, content in cookies if cookie in names and content)
    if len(found) != 1:
        return None
    return found.pop().decode("latin-1")


def without_edge_cookies(value: bytes) -> bytes:
    """A ``Cookie`` value without every part in which ``cookie_parts`` finds an Edge cookie."""
    kept = [
        part
        for part, cookies in cookie_parts(value)
        if not any(is_edge_cookie(cookie) for cookie, _ in cookies)
    ]
    return b"; ".join(kept)


def sets_edge_cookie(value: bytes) -> bool:
    """Whether a ``Set-Cookie`` value names one of Edge's cookies (to set or to clear it)."""
    # "foo=x,edge_session=T": some clients split a Set-Cookie on commas, so every
    # comma-separated name before the first attribute is judged.
    first = value.split(b";", 1)[0]
    return any(is_edge_cookie(part.partition(b"=")[0].strip()) for part in first.split(b","))


# -- what Edge asserts -------------------------------------------------------------------


def header_safe(text: str) -> bytes:
    """A display name as a header value: non-ASCII and control characters percent-encoded."""
    return quote(text, safe=_HEADER_SAFE).encode("ascii")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _plain_host(host: str | None) -> str | None:
    """The host if it is a plain host[:port] (no quotes, commas, spaces, ``=``), else ``None``."""
    if not host or len(host) > 260:
        return None
    raw = host.encode("latin-1", "replace")
    return host if all(c in _HOST_CHARS for c in raw) else None


def forwarding_headers(resolution: Resolution) -> list[Header]:
    """``X-Forwarded-*`` and ``Forwarded`` describing the resolved client, for the upstream.

    The host is repeated only when it is a plain host name or address with a
    port: a Host a client wrote is never copied into a structured header.
    """
    proto = _FORWARDED_SCHEME.get(resolution.scheme, "http")
    headers: list[Header] = []
    node = "unknown"
    if resolution.client_ip is not None:
        headers.append((b"x-forwarded-for", resolution.client_ip.encode("ascii")))
        ip = resolution.client_ip
        node = _quoted(f"[{ip}]") if ":" in ip else ip
    headers.append((b"x-forwarded-proto", proto.encode("ascii")))
    forwarded = f"for={node};proto={proto}"
    host = _plain_host(resolution.host)
    if host is not None:
        headers.append((b"x-forwarded-host", host.encode("ascii")))
        forwarded += f";host={_quoted(host)}"
    headers.append((b"forwarded", forwarded.encode("ascii")))
    return headers


def remote_user(auth: AuthState) -> str | None:
    """The login an upstream sees in ``Remote-User``: stable and never chosen by the device.

    Apps such as Grafana's auth proxy create and match accounts by it, so it is
    the ``user`` an operator assigned to the device, else the device id; the
    name a device gave itself (it could say ``admin``) travels as ``Remote-Name``.
    """
    if auth.state == "local":
        return "local"
    if auth.state == "paired" and auth.device is not None:
        return auth.device.user or auth.device.id
    return None


def identity_headers(auth: AuthState) -> list[Header]:
    """What Edge asserts about an admitted caller, for forward-auth answers and upstreams.

    ``Remote-User`` is the stable login (``remote_user``), ``Remote-Name``
    the display name (percent-encoded outside printable ASCII),
    ``Remote-Groups`` and ``X-Edge-Role`` the role, ``X-Edge-Device-Id`` the
    device; decisions belong on ``Remote-User``, the role and the device id.
    """
    user = remote_user(auth)
    if user is None:
        return []
    if auth.state == "local" or auth.device is None:
        return [
            (b"remote-user", b"local"),
            (b"remote-name", b"local"),
            (b"remote-groups", b"admin"),
            (b"x-edge-auth", b"local"),
            (b"x-edge-role", b"admin"),
        ]
    device = auth.device
    role = str(device.role).encode("ascii")
    return [
        (b"remote-user", header_safe(user)),
        (b"remote-name", header_safe(device.name.strip() or device.id[:12])),
        (b"remote-groups", role),
        (b"x-edge-auth", b"paired"),
        (b"x-edge-device-id", device.id.encode("ascii")),
        (b"x-edge-role", role),
    ]


# -- the policy --------------------------------------------------------------------------


def request_headers(
    client: Sequence[Header],
    *,
    forwarding: Sequence[Header],
    identity: Sequence[Header],
    drop_authorization: bool,
    drop: frozenset[bytes] = frozenset(),
) -> list[Header]:
    """The headers an upstream receives for a client's request.

    The client's end-to-end headers, less every reserved name in any
    spelling (``is_reserved``), less ``Host`` (the upstream's own is used),
    less the ``Authorization`` that authenticated the caller to Edge
    (``drop_authorization``) and Edge's cookies; then Edge's own forwarding
    and identity headers. ``drop`` holds further canonical names the caller
    sets itself (the WebSocket handshake's, Edge's ``X-Request-ID``), dropped
    in any spelling.
    """
    headers: list[Header] = []
    for name, value in end_to_end(client):
        lowered = name.lower()
        if (
            is_reserved(name)
            or canonical(name) in drop
            or lowered == b"host"
            or (lowered == b"authorization" and drop_authorization)
        ):
            continue
        if lowered == b"cookie":
            value = without_edge_cookies(value)
            if not value:
                continue
        headers.append((name, value))
    headers.extend(forwarding)
    headers.extend(identity)
    return headers


def upstream_request_headers(
    client: Sequence[Header],
    resolution: Resolution,
    auth: AuthState,
    *,
    request_id: str | None = None,
    drop: frozenset[bytes] = frozenset(),
) -> list[Header]:
    """``request_headers`` for an admitted caller: Edge's forwarding and identity headers set.

    ``Authorization`` is dropped only when it is the bearer token that
    admitted a paired device; otherwise it was not Edge's credential and is
    the app's to read. ``request_id`` (``edge.request_ids``) replaces any
    ``X-Request-ID`` the client sent: it is a trusted proxy's own id or one
    Edge made, so the upstream's log and Edge's name the request alike.
    """
    authenticated_by_bearer = auth.state == "paired" and any(
        name == b"authorization" and value[:7].lower() == b"bearer " for name, value in client
    )
    forwarding = forwarding_headers(resolution)
    if request_id is not None:
        forwarding.append((REQUEST_ID, request_id.encode("ascii")))
        drop = drop | {REQUEST_ID}
    return request_headers(
        client,
        forwarding=forwarding,
        identity=identity_headers(auth),
        drop_authorization=authenticated_by_bearer,
        drop=drop,
    )


SANDBOX = b"sandbox"


def response_headers(
    upstream: Iterable[Header], *, on_control_origin: bool, sandbox: bool
) -> list[Header]:
    """The upstream's end-to-end response headers as the client receives them (names lowercased).

    No upstream may set or clear Edge's cookies: on the control origin that
    would plant or end the dashboard's session directly, and an app on a host
    of its own could still toss one onto the dashboard's host with
    ``Domain=`` (a parent domain both share). An upstream that shares the
    control origin is also sandboxed unless the operator opted out
    (``sandbox``): ``Content-Security-Policy: sandbox`` gives its pages an
    opaque origin, so their scripts cannot read or use anything of the
    dashboard's.
    """
    headers: list[Header] = []
    for name, value in end_to_end(upstream):
        lowered = name.lower()
        if lowered == b"set-cookie" and sets_edge_cookie(value):
            continue
        headers.append((lowered, value))
    if on_control_origin and sandbox:
        headers.append((b"content-security-policy", SANDBOX))
    return headers


def hostname_of(host: str | None) -> str | None:
    """The lowercased name or address of a ``host[:port]`` (brackets kept off an IPv6 literal)."""
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0] or None
    return host.rpartition(":")[0].rstrip(".") if ":" in host else host.rstrip(".")
