"""Which browser origins may open the control socket (or an upstream's).

Allowed: no Origin at all (a non-browser client: token and device checks still
apply), or an origin that ``edge.net.origin.is_same_origin`` accepts: exactly
the gateway's own origin as the client reached it, or an entry of
``auth.allowed_origins``. Another loopback origin (``http://localhost:3000``) is
cross-site like any other, local client or not.
"""

from __future__ import annotations

from edge.net import Resolution
from edge.net.origin import is_same_origin, normalise_origin
from edge.net.origin import own_origin as _own_origin

__all__ = ["normalise_origin", "origin_allowed", "own_origin"]


def own_origin(resolution: Resolution) -> str | None:
    """The origin the client reached, from the resolved scheme and host."""
    return _own_origin(resolution.scheme, resolution.host)


def origin_allowed(origin: str | None, resolution: Resolution, allowed: frozenset[str]) -> bool:
    if origin is None:
        return True
    return is_same_origin(origin, resolution.scheme, resolution.host, allowed)
