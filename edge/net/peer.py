"""Who owns the other end of a connection, as the kernel said: a value, looked up elsewhere.

A loopback address says only that the peer runs on this machine, not who runs
it: nginx's worker, HAProxy, socat or another account's browser all connect
from 127.0.0.1. The owner's uid does say it, so locality asks for it
(``local.peer_check: uid``). The lookup is I/O and lives in
``edge.gateway.peers``; this module only carries its answer, so the resolver
stays a pure function of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

SAME_USER = "same-user"
OTHER_USER = "other-user"
UNKNOWN = "unknown"

PEER_CHECKS = ("uid", "address")


def _who(user: str | None, uid: int | None) -> str:
    if uid is None:
        return "an unknown user"
    return f"user {user} (uid {uid})" if user else f"uid {uid}"


@dataclass(frozen=True, slots=True)
class PeerOwner:
    """The peer socket's owner (``uid``/``user``), the gateway's own, and how it was found.

    ``source`` names the kernel interface that answered (``SO_PEERCRED``,
    ``sock_diag``, ``/proc/net/tcp``) or, when ``uid`` is None, why there is
    no answer (no lookup for this connection, a table that could not be read).
    """

    uid: int | None
    user: str | None
    gateway_uid: int | None
    gateway_user: str | None
    source: str

    @property
    def verdict(self) -> str:
        if self.uid is None or self.gateway_uid is None:
            return UNKNOWN
        return SAME_USER if self.uid == self.gateway_uid else OTHER_USER

    def describe(self) -> str:
        """In words, as the start-up log, ``edge explain`` and whoami say it."""
        edge_user = _who(self.gateway_user, self.gateway_uid)
        verdict = self.verdict
        if verdict == UNKNOWN:
            return f"the owner of the connection is unknown ({self.source})"
        owner = _who(self.user, self.uid)
        if verdict == SAME_USER:
            return f"the connection belongs to {owner}, edge's own user ({self.source})"
        return f"the connection belongs to {owner}, not to edge's {edge_user} ({self.source})"

    def to_dict(self) -> dict[str, object]:
        return {"uid": self.uid, "user": self.user, "owner": self.verdict, "found_by": self.source}


NOT_LOOKED_UP = PeerOwner(
    None, None, None, None, "not looked up: the connection did not come through `edge serve`"
)
