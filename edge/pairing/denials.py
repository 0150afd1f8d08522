"""Every refusal the gateway can give, in one place.

A close reason such as ``pairing required`` is a contract with clients (they
match on it), a metric label is a contract with dashboards, and whether a
refusal counts towards the per-address lockout is a security decision. Keeping
all three side by side makes a new refusal impossible to half-add.
"""

from __future__ import annotations

import enum


class Denial(enum.Enum):
    """A refusal: ``(close reason, metric label, counts as a failed attempt)``."""

    _value_: tuple[str, str, bool]

    ORIGIN_NOT_ALLOWED = ("origin not allowed", "origin_not_allowed", False)
    INVALID_HANDSHAKE = ("invalid handshake", "invalid_handshake", False)
    HANDSHAKE_TIMEOUT = ("handshake timeout", "handshake_timeout", False)
    GATEWAY_TOKEN_MISSING = ("unauthorized: gateway token missing", "gateway_token_missing", False)
    GATEWAY_TOKEN_MISMATCH = (
        "unauthorized: gateway token mismatch",
        "gateway_token_mismatch",
        True,
    )
    DEVICE_TOKEN_INVALID = ("unauthorized: device token invalid", "device_token_invalid", True)
    INVITE_INVALID = ("unauthorized: invite invalid", "invite_invalid", True)
    RATE_LIMITED = ("unauthorized: too many failed attempts", "rate_limited", False)
    DEVICE_IDENTITY_REQUIRED = ("device identity required", "device_identity_required", False)
    DEVICE_IDENTITY_MISMATCH = ("device identity mismatch", "device_identity_mismatch", False)
    DEVICE_SIGNATURE_INVALID = ("device signature invalid", "device_signature_invalid", True)
    DEVICE_SIGNATURE_EXPIRED = ("device signature expired", "device_signature_expired", False)
    PAIRING_REQUIRED = ("pairing required", "pairing_required", False)
    DEVICE_REVOKED = ("device revoked", "device_revoked", False)
    CREDENTIALS_MISSING = ("unauthorized: credentials missing", "credentials_missing", False)
    ROLE_FORBIDDEN = ("forbidden: admin role required", "role_forbidden", False)
    METRICS_TOKEN_MISMATCH = (
        "unauthorized: metrics token mismatch",
        "metrics_token_mismatch",
        True,
    )
    CROSS_SITE_WRITE = ("forbidden: cross-site request", "cross_site_write", False)

    @property
    def reason(self) -> str:
        """The WebSocket close reason (code 1008), exactly as the contract spells it."""
        return self._value_[0]

    @property
    def metric_label(self) -> str:
        """The bounded ``reason`` label of ``edge_auth_failures_total``."""
        return self._value_[1]

    @property
    def counts_as_failure(self) -> bool:
        """Whether this refusal feeds the per-address lockout (a guess at a secret)."""
        return self._value_[2]

    @property
    def http_status(self) -> int:
        """The HTTP status for this refusal: 403 for a known caller lacking a role, else 401."""
        return 403 if self in (Denial.ROLE_FORBIDDEN, Denial.CROSS_SITE_WRITE) else 401

    @property
    def next_step(self) -> str:
        """One sentence telling the operator or user what to do about it."""
        return _NEXT_STEPS[self]

    @classmethod
    def from_reason(cls, reason: str) -> Denial | None:
        """The denial a client received as a close reason, or None if it is not one of ours."""
        return _BY_REASON.get(reason)


_NEXT_STEPS: dict[Denial, str] = {
    Denial.ORIGIN_NOT_ALLOWED: (
        "Open the dashboard from the gateway's own address, or add this page's origin "
        "to auth.allowed_origins."
    ),
    Denial.INVALID_HANDSHAKE: (
        "Update the client: its connect frame does not follow the Edge control protocol."
    ),
    Denial.HANDSHAKE_TIMEOUT: (
        "Reconnect; the client must answer the challenge within pairing.handshake_timeout seconds."
    ),
    Denial.GATEWAY_TOKEN_MISSING: (
        "Enter the gateway token (`edge token show` on the gateway host prints it)."
    ),
    Denial.GATEWAY_TOKEN_MISMATCH: (
        "Check the gateway token (`edge token show` on the gateway host); it may have been rotated."
    ),
    Denial.DEVICE_TOKEN_INVALID: (
        "Forget the stored device token and connect with the gateway token to pair again."
    ),
    Denial.INVITE_INVALID: (
        "Ask an operator for a new invite; each invite works once and expires."
    ),
    Denial.RATE_LIMITED: (
        "Wait for the lockout to end (auth.rate_limit.lockout seconds), then retry with the "
        "right token."
    ),
    Denial.DEVICE_IDENTITY_REQUIRED: (
        "Use a client that creates a device key; browsers need HTTPS or localhost for WebCrypto."
    ),
    Denial.DEVICE_IDENTITY_MISMATCH: (
        "Clear the client's stored device key and token, then pair again."
    ),
    Denial.DEVICE_SIGNATURE_INVALID: (
        "Clear the client's stored device key and pair again; its signature does not verify."
    ),
    Denial.DEVICE_SIGNATURE_EXPIRED: (
        "Fix the clock of the client or the gateway host (they differ by more than two minutes)."
    ),
    Denial.PAIRING_REQUIRED: (
        "Ask an operator to run `edge devices approve <REQUEST>` or approve it from an admin "
        "dashboard."
    ),
    Denial.DEVICE_REVOKED: (
        "This device was revoked; ask an operator to approve a new pairing request for it."
    ),
    Denial.CREDENTIALS_MISSING: (
        "Send `Authorization: Bearer <device token>` or sign in through the dashboard."
    ),
    Denial.ROLE_FORBIDDEN: (
        "Use an admin device, or ask an operator to approve this device as admin."
    ),
    Denial.METRICS_TOKEN_MISMATCH: (
        "Give the scraper the value of metrics.bearer_token (Authorization: Bearer <token>), or "
        "scrape from metrics.allowed_networks."
    ),
    Denial.CROSS_SITE_WRITE: (
        "Make the change from the dashboard at the gateway's own address (or an origin listed "
        "in auth.allowed_origins) with a JSON body, or send `Authorization: Bearer <device "
        "token>` instead of the session cookie."
    ),
}

_BY_REASON: dict[str, Denial] = {denial.reason: denial for denial in Denial}
