"""Which browser origins may open the control socket.

Allowed: no Origin at all (a non-browser client: token and device checks still
apply), the gateway's own origin as the client reached it, a loopback origin
for a local client, or an entry of ``auth.allowed_origins``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from edge.net import Resolution, parse_host
from edge.net.address import is_loopback, parse_ip

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _normalise(scheme: str, host: str, port: int | None) -> str:
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalise_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` with default ports dropped, or None if it is not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return _normalise(parts.scheme, host, port)


def own_origin(resolution: Resolution) -> str | None:
    if not resolution.host:
        return None
    parsed = parse_host(resolution.host)
    if parsed is None:
        return None
    host, port = parsed
    if ":" in host:
        host = f"[{host}]"
    return _normalise(resolution.scheme, host, port)


def _is_loopback_origin(origin: str) -> bool:
    host = urlsplit(origin).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    ip = parse_ip(host)
    return ip is not None and is_loopback(ip)


def origin_allowed(origin: str | None, resolution: Resolution, allowed: frozenset[str]) -> bool:
    if origin is None:
        return True
    normalised = normalise_origin(origin)
    if normalised is None:
        return False
    if normalised == own_origin(resolution):
        return True
    if resolution.local and _is_loopback_origin(normalised):
        return True
    return normalised in allowed or normalised + "/" in allowed
