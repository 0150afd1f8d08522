"""The pairing domain's values: roles, devices, pending requests, invites, events.

All are immutable; a change is a new value written to the store together with
the event that describes it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

PAIRED: Final = "paired"
REVOKED: Final = "revoked"
NOT_PAIRED: Final = "not-paired"
ROLE_UPGRADE: Final = "role-upgrade"
# An operator-assigned login: what upstream apps see as the user. Lowercase so that
# ``Alice`` and ``alice`` can never be two people to an app that folds case.
USER_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
# The longest an operator may make an invite live (`edge devices invite --ttl`, the dashboard,
# POST /api/invites): an invite is a bearer credential in a link, so it must not outlast the
# chat or the printout it was sent in by much.
INVITE_MAX_TTL: Final = 7 * 86_400.0
USER_RULE: Final = (
    "a user name is 1-64 characters of a-z, 0-9, '.', '_', '@' or '-', starting with a "
    "letter or digit"
)


def valid_user(text: object) -> str | None:
    """``text`` when it is a well-formed user name, else None."""
    if isinstance(text, str) and USER_PATTERN.fullmatch(text):
        return text
    return None


class Role(enum.StrEnum):
    ADMIN = "admin"  # may manage devices
    USER = "user"

    def covers(self, other: Role) -> bool:
        """Whether a device approved for this role may act as ``other`` (admin covers user)."""
        return self is Role.ADMIN or other is self

    @classmethod
    def parse(cls, text: object) -> Role | None:
        """The role named by ``text`` (exact, lowercase), or None."""
        if isinstance(text, str):
            for role in cls:
                if role.value == text:
                    return role
        return None


@dataclass(frozen=True)
class Device:
    """A device that was approved once; ``status`` is ``paired`` or ``revoked``.

    ``token_hash`` is None between approval and the device's next connect,
    where it receives its device token. A revoked device keeps its token hash so
    that its token is answered with ``device revoked`` rather than ``invalid``.

    ``user`` is the login an operator assigned (several devices of one person
    share it); ``name`` is what the device calls itself and is never an
    identity to anyone.
    """

    id: str
    public_key: str
    name: str
    role: Role
    status: str
    token_hash: str | None
    created_at: float
    approved_by: str
    last_seen_at: float | None = None
    last_ip: str | None = None
    revoked_at: float | None = None
    user: str | None = None

    @property
    def is_paired(self) -> bool:
        return self.status == PAIRED

    def __repr__(self) -> str:  # keeps the token hash out of logs and tracebacks
        return (
            f"Device(id={self.id[:12]!r}, name={self.name!r}, role={self.role.value!r}, "
            f"user={self.user!r}, status={self.status!r})"
        )


@dataclass(frozen=True)
class PairingRequest:
    """A device waiting for an operator: at most one per device, until ``expires_at``."""

    id: str
    device_id: str
    public_key: str
    name: str
    client_ip: str | None
    user_agent: str | None
    role: Role
    reason: str  # NOT_PAIRED or ROLE_UPGRADE
    created_at: float
    expires_at: float
    # What the per-client cap counts under: the IPv4 address or the IPv6 prefix
    # (``edge.net.client_key``), fixed when the request is made so a later change
    # of ``auth.rate_limit.ipv6_prefix`` cannot strand it in another count.
    # A request made without one (or read from a record older than the field) counts
    # under its address.
    client_key: str | None = None

    def __post_init__(self) -> None:
        if self.client_key is None and self.client_ip is not None:
            object.__setattr__(self, "client_key", self.client_ip)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class Invite:
    """A single-use code that pairs whichever device presents it first, with ``role``."""

    id: str
    code_hash: str
    role: Role
    name: str | None
    created_at: float
    expires_at: float
    created_by: str
    used_at: float | None = None
    used_by_device: str | None = None

    def usable(self, now: float) -> bool:
        return self.used_at is None and now < self.expires_at

    def __repr__(self) -> str:
        return f"Invite(id={self.id!r}, role={self.role.value!r}, used={self.used_at is not None})"


@dataclass(frozen=True)
class Event:
    """One entry of the append-only change log; ``seq`` increases, data holds no secret."""

    seq: int
    type: str
    data: dict[str, object]
    at: float


@dataclass(frozen=True)
class NewEvent:
    """An event to append; the store gives it its ``seq`` and time in the same transaction."""

    type: str
    data: Mapping[str, object] = field(default_factory=dict)


def approved_device(
    existing: Device | None,
    *,
    device_id: str,
    public_key: str,
    name: str,
    role: Role,
    approved_by: str,
    now: float,
    token_hash: str | None = None,
    user: str | None = None,
) -> Device:
    """The device record after an approval (request, invite or local client).

    A device that is still paired keeps its name (an operator may have renamed
    it), creation time, assigned user unless ``user`` is given and, unless
    ``token_hash`` is given, its token. A new or revoked device starts afresh:
    its old token stays dead and only an explicit ``user`` is assigned.
    """
    if existing is not None and existing.is_paired:
        return Device(
            id=existing.id,
            public_key=existing.public_key,
            name=existing.name,
            role=role,
            status=PAIRED,
            token_hash=existing.token_hash if token_hash is None else token_hash,
            created_at=existing.created_at,
            approved_by=approved_by,
            last_seen_at=existing.last_seen_at,
            last_ip=existing.last_ip,
            user=existing.user if user is None else user,
        )
    return Device(
        id=device_id,
        public_key=public_key,
        name=name,
        role=role,
        status=PAIRED,
        token_hash=token_hash,
        created_at=now,
        approved_by=approved_by,
        last_seen_at=existing.last_seen_at if existing else None,
        last_ip=existing.last_ip if existing else None,
        user=user,
    )


def said_no(
    decision: str,
    decided: PairingRequest,
    decided_at: float | None,
    candidate: PairingRequest,
    now: float,
    cooldown: float,
) -> bool:
    """Whether an operator's last ``decision`` on a device refuses ``candidate`` for now.

    A rejection refuses any new request; an approval of a request for admin
    that left the device a user refuses its asking for admin again: both are
    an operator's "no", and a device that asked again by itself at once would
    put the question straight back in their queue. Either holds for
    ``cooldown`` seconds from ``decided_at``.
    """
    if decided_at is None or now >= decided_at + cooldown:
        return False
    if decision == "rejected":
        return True
    return (
        decision == "approved"
        and decided.role is Role.ADMIN
        and candidate.role is Role.ADMIN
        and candidate.reason == ROLE_UPGRADE
    )


def approval_role(
    existing: Device | None, requested: Role, override: Role | None, at_most: Role | None = None
) -> Role:
    """The role an approval grants: the operator's choice, else the requested role.

    ``at_most`` caps what is granted without an explicit choice: an operator
    approving with a plain ``edge devices approve`` or the dashboard's
    default button grants ``user`` even when the device ticked "request
    admin", because admin must be a decision, not a click-through. Without an
    explicit choice a still-paired device never loses a role it already has
    (approving a stale "user" request of an admin keeps it admin).
    """
    if override is not None:
        return override
    wanted = requested if at_most is None or at_most.covers(requested) else at_most
    if existing is not None and existing.is_paired and existing.role.covers(wanted):
        return existing.role
    return wanted


def fingerprint(device_id: str) -> str:
    """The first 64 bits of a device id in groups of four, for a person to compare by eye.

    The waiting page shows the same groups, so an operator can check that the
    request on the screen is the device in front of them.
    """
    head = device_id[:16]
    return " ".join(head[n : n + 4] for n in range(0, len(head), 4))


def device_event_data(device: Device, actor: str, **extra: object) -> dict[str, object]:
    """The common data of a ``device.*`` event (never the token hash)."""
    return {
        "device_id": device.id,
        "name": device.name,
        "role": device.role.value,
        "user": device.user,
        "actor": actor,
        **extra,
    }


def request_event_data(request: PairingRequest, **extra: object) -> dict[str, object]:
    """The common data of a ``pairing.*`` event."""
    return {
        "request_id": request.id,
        "device_id": request.device_id,
        "name": request.name,
        "role": request.role.value,
        "reason": request.reason,
        "client_ip": request.client_ip,
        **extra,
    }


def invite_event_data(invite: Invite, actor: str, **extra: object) -> dict[str, object]:
    """The common data of an ``invite.*`` event (never the code or its hash)."""
    return {
        "invite_id": invite.id,
        "role": invite.role.value,
        "name": invite.name,
        "expires_at": invite.expires_at,
        "actor": actor,
        **extra,
    }


@dataclass(frozen=True)
class ConnectAttempt:
    """A control-socket connect frame, read and checked for shape by ``edge.gateway.protocol``.

    The pairing service decides on this, never on the wire's JSON: which
    credential was offered (``token``, ``deviceToken``, ``invite`` or none),
    its secret, the role asked for, the display name, and the device proof
    (``device``), which ``verify_device`` checks against the challenge.
    ``device_id`` is the id that proof claims, before it is verified;
    ``empty_auth`` says ``auth`` was absent or ``{}``, as a browser that
    keeps its device token only in the session cookie sends it.
    """

    credential: str | None
    secret: str = field(repr=False)
    role: Role
    name: str | None
    device: object = field(default=None, repr=False)
    device_id: str | None = None
    empty_auth: bool = False


@dataclass(frozen=True)
class MalformedConnect:
    """A connect frame whose fields do not follow the protocol; ``detail`` says which one."""

    detail: str
