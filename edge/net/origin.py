"""Browser origins: the one place that decides whether an Origin is the gateway's own.

The gateway's own origin is the scheme, host and port the client reached
(after resolution). Only that origin, or an entry of ``auth.allowed_origins``,
is same-origin: for locality, for the control socket and for upgrades to an
upstream. Comparing hosts alone would let any page on another port of the same
machine (a dev server on ``http://localhost:3000``, a local app with an XSS)
speak as the dashboard, so the port always counts.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from edge.net.address import parse_host

_DEFAULT_PORTS = {"http": 80, "https": 443}
_AS_HTTP = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _serialise(scheme: str, host: str, port: int | None) -> str:
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalise_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` with the default port dropped, or None if it is not an origin.

    Strict on purpose: user info, a path (one trailing ``/`` is tolerated for
    configured entries), a query, ``null`` or another scheme make it no origin,
    so nothing that merely contains a local name can pass for one.
    """
    if not isinstance(origin, str):
        return None
    scheme, separator, authority = origin.strip().partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in _DEFAULT_PORTS:
        return None
    if authority.endswith("/"):
        authority = authority[:-1]
    parsed = parse_host(authority)
    if parsed is None:
        return None
    return _serialise(scheme, parsed[0], parsed[1])


def own_origin(scheme: str, host: str | None) -> str | None:
    """The origin a client reached: its (resolved) scheme and Host, WebSocket schemes as HTTP."""
    if not host:
        return None
    http_scheme = _AS_HTTP.get(scheme)
    parsed = parse_host(host)
    if http_scheme is None or parsed is None:
        return None
    return _serialise(http_scheme, parsed[0], parsed[1])


def is_same_origin(
    origin: str, scheme: str, host: str | None, allowed: frozenset[str] = frozenset()
) -> bool:
    """Whether ``origin`` is exactly the gateway's own origin or one of ``allowed`` (normalised)."""
    normalised = normalise_origin(origin)
    if normalised is None:
        return False
    return normalised == own_origin(scheme, host) or normalised in allowed


def check_public_url(value: str) -> str:
    """``server.public_url`` as links are built on it: an absolute http(s) URL, no final ``/``.

    A query or fragment would end up in the middle of every invite link (the
    invite code travels in the fragment), so either is refused.
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute http(s) URL, e.g. https://edge.example.com")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError(f"{value!r} must have no query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return value.rstrip("/")
