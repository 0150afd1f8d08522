"""What the pairing service is configured with, what it answers, and its refusals to operators.

Pure values: the policies (validated once), the outcomes of a handshake
(``Admitted``/``Denied``), the errors of operator actions, and the small
naming rules both use.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field

from edge.net.client_key import DEFAULT_IPV6_PREFIX
from edge.pairing.models import INVITE_MAX_TTL, Device, PairingRequest
from edge.refusals import Denial

MAX_INVITE_TTL = INVITE_MAX_TTL  # one cap, wherever an invite is made
MAX_NAME_CHARS = 64
MAX_SECRET_CHARS = 512
MAX_USER_AGENT_CHARS = 256
INVITE_CODE_BYTES = 18  # 144 bits: short enough for a QR code or a chat message
TOKEN_SWAP_ATTEMPTS = 8
LOCAL_ACTOR = "local"


@dataclass(frozen=True)
class RateLimitPolicy:
    """``failures`` failed attempts within ``window`` seconds lock a client for ``lockout``.

    A client is its IPv4 address or its IPv6 ``/ipv6_prefix`` (``client_key``).
    """

    failures: int = 10
    window: float = 60
    lockout: float = 300
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"auth.rate_limit.failures must be at least 1, not {self.failures}")
        if not 32 <= self.ipv6_prefix <= 128:
            raise ValueError(
                f"auth.rate_limit.ipv6_prefix must be from 32 to 128, not {self.ipv6_prefix}"
            )
        _require_positive("auth.rate_limit.window", self.window)
        _require_positive("auth.rate_limit.lockout", self.lockout)


DEFAULT_DECLINE_COOLDOWN = 600.0


@dataclass(frozen=True)
class PairingPolicy:
    """``decline_cooldown``: how long a declined device may not ask again (0: at once)."""

    request_ttl: float = 300
    max_pending: int = 256
    max_pending_per_client: int = 8
    device_idle_expiry: float | None = None
    # Only devices a local client paired (approved by ``LOCAL_ACTOR``): None keeps them.
    local_device_idle_expiry: float | None = None
    signature_skew: float = 120
    rate_limit: RateLimitPolicy = field(default_factory=RateLimitPolicy)
    decline_cooldown: float = DEFAULT_DECLINE_COOLDOWN

    def __post_init__(self) -> None:
        _require_positive("pairing.request_ttl", self.request_ttl)
        if not (
            isinstance(self.decline_cooldown, int | float)
            and math.isfinite(self.decline_cooldown)
            and self.decline_cooldown >= 0
        ):
            raise ValueError(
                "pairing.decline_cooldown must be a number of seconds (0 or more), "
                f"not {self.decline_cooldown!r}"
            )
        _require_positive("pairing.signature_skew", self.signature_skew)
        if self.device_idle_expiry is not None:
            _require_positive("pairing.device_idle_expiry", self.device_idle_expiry)
        if self.local_device_idle_expiry is not None:
            _require_positive("pairing.local_device_idle_expiry", self.local_device_idle_expiry)
        for name, value in (
            ("pairing.max_pending", self.max_pending),
            ("pairing.max_pending_per_client", self.max_pending_per_client),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")


def _require_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")


@dataclass(frozen=True)
class Admitted:
    device: Device
    device_token: str = field(repr=False)


@dataclass(frozen=True)
class Denied:
    """A refusal; for PAIRING_REQUIRED ``request`` is the pending request (None if capped).

    ``declined`` marks a PAIRING_REQUIRED whose ``request`` an operator
    declined: no new request was made, and ``retry_after`` is the rest of the
    device's cool-down. For RATE_LIMITED ``retry_after`` is the rest of the
    lockout. ``tries_left`` is set on a refusal that counted
    towards the lockout: how many more failures the address has before it.
    """

    denial: Denial
    request: PairingRequest | None = None
    detail: str = ""
    retry_after: float = 0.0
    tries_left: int | None = None
    declined: bool = False


class PairingError(Exception):
    """An operator action cannot be done; the message says why, ready to print."""


class NotFound(PairingError):
    pass


class AlreadyResolved(PairingError):
    pass


class PendingLimitReached(PairingError):
    pass


class PairingDeclined(PairingError):
    """An operator declined this device's last request and its cool-down is not over."""

    def __init__(self, message: str, request: PairingRequest, until: float) -> None:
        super().__init__(message)
        self.request = request
        self.until = until


@dataclass(frozen=True)
class FailureCounted:
    """A failed attempt, counted: ``tries_left`` before a lockout, or the lockout it started."""

    tries_left: int
    locked_for: float = 0.0


class InvalidValue(PairingError, ValueError):
    pass


def clean_name(text: str) -> str | None:
    """``text`` stripped, if it is 1-64 characters with no control or format characters."""
    if not isinstance(text, str):
        return None
    name = text.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        return None
    if any(unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn"} for char in name):
        return None
    return name


def device_actor(device: Device) -> str:
    """How a device appears in the audit trail when it acts (from an admin dashboard)."""
    return f"device:{device.id[:12]} ({device.name})"


def default_device_name(device_id: str) -> str:
    return f"device {device_id[:8]}"


def describe(device: Device) -> str:
    return f"{device.id[:12]} ({device.name})"
