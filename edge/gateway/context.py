"""What the middleware leaves in the ASGI scope for the layers after it."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from edge.net import Resolution
from edge.pairing.models import Device
from edge.refusals import Denial

RESOLUTION_KEY = "edge.resolution"
AUTH_KEY = "edge.auth"
# The connection's owner as the kernel said (edge.gateway.peers), set per connection by the
# protocol classes `edge serve` gives uvicorn; absent under any other server or test client.
PEER_OWNER_KEY = "edge.peer_owner"
# The request's id (edge.request_ids), set by RequestIdMiddleware.
REQUEST_ID_KEY = "edge.request_id"


@dataclass(frozen=True, slots=True)
class AuthState:
    """Who the HTTP caller is: local, a paired device, or nobody (with the reason).

    ``via_cookie`` says the credential was the session cookie, which a browser
    attaches to requests other sites make: such a caller's writes must also
    pass the cross-site checks. ``retry_after`` is the rest of a lockout.
    """

    state: Literal["local", "paired", "anonymous"]
    device: Device | None = None
    denial: Denial | None = None
    retry_after: float = 0.0
    via_cookie: bool = False
    # set when this request's failure was counted: tries before the address is locked out
    tries_left: int | None = None


ANONYMOUS = AuthState("anonymous")
LOCAL = AuthState("local")


def resolution_of(scope: MutableMapping[str, Any]) -> Resolution:
    resolution = scope.get(RESOLUTION_KEY)
    if not isinstance(resolution, Resolution):
        raise RuntimeError("ClientResolutionMiddleware must wrap the app")
    return resolution


def auth_of(scope: MutableMapping[str, Any]) -> AuthState:
    auth = scope.get(AUTH_KEY)
    return auth if isinstance(auth, AuthState) else ANONYMOUS


def request_id_of(scope: MutableMapping[str, Any]) -> str | None:
    """The request's id, or ``None`` when ``RequestIdMiddleware`` does not wrap the app."""
    request_id = scope.get(REQUEST_ID_KEY)
    return request_id if isinstance(request_id, str) else None
