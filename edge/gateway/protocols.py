"""The uvicorn protocol classes ``edge serve`` runs: each connection's owner, asked once.

They are uvicorn's own HTTP and WebSocket protocols with two additions: the
HTTP one bounds request heads (``edge.heads``: size, deadline, connections per
address) before the app sees a request, and both learn who owns the other end.

``connection_made`` asks the kernel who owns the other end
(``edge.peercred``) and wraps the app for that connection only, so every
request on it (and the WebSocket it may be upgraded to) carries the answer
in ``scope[PEER_OWNER_KEY]``. Nothing is looked up per request, and no other
connection can inherit the answer: not a later one reusing the same 4-tuple,
not another unix-socket client (they all share one address, so a registry
keyed by address could not tell them apart). Under any other server, or an
in-process test client, the key is absent and the owner is unknown.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

from edge.gateway.context import CONNECTION_KEY, PEER_OWNER_KEY, Connection
from edge.heads import HeadLimitedH11Protocol, HeadLimitedHttpToolsProtocol
from edge.net.peer import PeerOwner
from edge.peercred import owner_of_transport


class _WithPeerOwner:
    """The app, for one connection: every scope it serves carries that connection's owner.

    And the connection's memo (``Connection``), so a keep-alive connection's
    repeated request is resolved once.
    """

    __slots__ = ("app", "connection", "owner")

    def __init__(self, app: Any, owner: PeerOwner) -> None:
        self.app = app
        self.owner = owner
        self.connection = Connection(owner)

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        # A plain call returning the app's coroutine: no coroutine of its own per request.
        scope[PEER_OWNER_KEY] = self.owner
        scope[CONNECTION_KEY] = self.connection
        return self.app(scope, receive, send)  # type: ignore[no-any-return]


def with_peer_owner(base: Any, name: str) -> Any:
    """uvicorn's protocol class ``base`` with the connection's owner and memo (``name``)."""

    class Protocol(base):  # type: ignore[misc]
        edge_peer_owner: PeerOwner | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            # On an HTTP -> WebSocket upgrade uvicorn hands the same transport to the
            # WebSocket protocol while the HTTP one is still its protocol: take its answer.
            handed_over = getattr(transport.get_protocol(), "edge_peer_owner", None)
            owner = (
                handed_over if isinstance(handed_over, PeerOwner) else owner_of_transport(transport)
            )
            self.edge_peer_owner = owner
            app: Any = self.__dict__["app"]  # set by uvicorn's __init__ (a base mypy cannot see)
            self.app = _WithPeerOwner(app, owner)

    Protocol.__name__ = Protocol.__qualname__ = name
    Protocol.__module__ = __name__
    return Protocol


# uvicorn's choice of HTTP parser (httptools where installed, else h11), with bounded heads.
_BOUNDED_HTTP = (
    HeadLimitedHttpToolsProtocol
    if issubclass(AutoHTTPProtocol, HttpToolsProtocol)
    else HeadLimitedH11Protocol
)
HTTPProtocol = with_peer_owner(_BOUNDED_HTTP, "HTTPProtocol")
WebSocketProtocol = (
    with_peer_owner(AutoWebSocketsProtocol, "WebSocketProtocol")
    if AutoWebSocketsProtocol is not None
    else None
)
# Given to uvicorn by `edge serve` as classes, which every supported uvicorn accepts (an
# import string only from later releases); worker processes unpickle them by this module's
# names. Without a WebSocket library uvicorn serves no WebSockets, as its own "auto" would.
HTTP_PROTOCOL: type[Any] = HTTPProtocol
WS_PROTOCOL: type[Any] | str = WebSocketProtocol if WebSocketProtocol is not None else "none"
