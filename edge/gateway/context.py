"""What the middleware leaves in the ASGI scope for the layers after it."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from edge.net import PeerOwner, Resolution
from edge.pairing.models import Device
from edge.refusals import Denial

RESOLUTION_KEY = "edge.resolution"
AUTH_KEY = "edge.auth"
# The connection's owner as the kernel said (edge.gateway.peers), set per connection by the
# protocol classes `edge serve` gives uvicorn; absent under any other server or test client.
PEER_OWNER_KEY = "edge.peer_owner"
# The request's id (edge.request_ids), set by RequestIdMiddleware.
REQUEST_ID_KEY = "edge.request_id"
# The connection's own memo (``Connection``), set beside it by the same protocol classes.
CONNECTION_KEY = "edge.connection"


class Connection:
    """What one client connection remembers across the requests it carries.

    ``last`` is the last request's resolution with everything it was made
    from (the policy, the header list, the peer, the scheme, the scope type):
    the next request on a keep-alive connection that repeats those exactly is
    resolved already, by a comparison of the raw header bytes. One entry per
    connection, gone with it; a reload makes a new policy, which no entry matches.
    """

    __slots__ = ("auth", "last", "owner")

    def __init__(self, owner: PeerOwner) -> None:
        self.owner = owner
        self.last: Resolved | None = None
        # The credential decision made for ``last`` (``edge.gateway.guard.Authenticator``).
        self.auth: RememberedAuth | None = None


# (policy, headers, client, scheme, scope type, the resolution made from them)
Resolved = tuple[object, list[tuple[bytes, bytes]], object, object, str, Resolution]
# (the Resolved it was made for, the caches' epoch then, valid until (wall clock), the state)
RememberedAuth = tuple["Resolved", int, float, "AuthState"]


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


# The paired AuthState of each recently seen device object, by its id and the credential's
# kind: one is made per device the token cache hands out, not one per request. An entry
# holds its device, so no other object can take that id while the entry lives.
_PAIRED_MEMO = 4096
_paired_states: tuple[dict[int, AuthState], dict[int, AuthState]] = ({}, {})


def paired_state(device: Device, via_cookie: bool) -> AuthState:
    """``AuthState("paired", device, via_cookie)``, the same object for the same device."""
    states = _paired_states[via_cookie]
    state = states.get(id(device))
    if state is None or state.device is not device:
        state = AuthState("paired", device=device, via_cookie=via_cookie)
        if len(states) >= _PAIRED_MEMO:
            states.clear()
        states[id(device)] = state
    return state
