"""What the store's decisions answer: a resolution, a refused request, a counted failure.

Value types only, shared by the contract (``base``), its implementation
(``ledger``) and the service that turns them into operators' messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edge.pairing.models import Device, PairingRequest


class ResolveStatus(enum.Enum):
    RESOLVED = "resolved"
    NOT_FOUND = "not_found"
    EXPIRED = "expired"
    ALREADY_RESOLVED = "already_resolved"


@dataclass(frozen=True)
class ResolveOutcome:
    """What ``resolve_request`` did.

    ``request`` is set unless NOT_FOUND; ``device`` is the paired device after
    an approval; ``decision`` is ``approved``/``rejected``/``expired`` (for
    ALREADY_RESOLVED: the earlier decision) and ``resolved_by`` who made it;
    ``replaced`` the older device the approval revoked in its place, if any.
    """

    status: ResolveStatus
    request: PairingRequest | None = None
    device: Device | None = None
    decision: str | None = None
    resolved_by: str | None = None
    replaced: Device | None = None


@dataclass(frozen=True)
class PendingCapHit:
    """``open_request`` refused to add a request: ``cap`` (a config key) is at ``limit``."""

    cap: str  # "max_pending" or "max_pending_per_client"
    limit: int


@dataclass(frozen=True)
class Declined:
    """``open_request`` refused to re-open: an operator declined ``request`` until ``until``.

    The device asked again within ``pairing.decline_cooldown`` of its last
    decline. No request is made, so the declined device never lands in the
    queue again by reconnecting; it may ask once the cool-down is over.
    """

    request: PairingRequest
    declined_at: float
    declined_by: str | None
    until: float


@dataclass(frozen=True)
class Counted:
    """What ``count_failure`` did: the failures in the window and the lockout, if any.

    ``started`` is the end of a lockout this failure started (None if it did
    not start one); ``locked_until`` the end of whichever lockout is running.
    """

    count: int
    locked_until: float
    started: float | None = None


def pending_cap_message(hit: PendingCapHit) -> str:
    """The operator-facing explanation of a refused pairing request."""
    scope = "for this address" if hit.cap == "max_pending_per_client" else "in total"
    return (
        f"too many pending pairing requests {scope} (pairing.{hit.cap} = {hit.limit}); "
        "approve or reject some, or wait for them to expire"
    )
