"""The pairing domain: devices, requests, invites, tokens, identity, and their stores.

Plain Python (no Starlette): the ASGI layer and the CLI translate to and from
it. The names below are the public surface; the modules hold the details.
"""

from __future__ import annotations

from edge.pairing.identity import DeviceKey, VerifiedIdentity, verify_device
from edge.pairing.models import Device, Event, Invite, PairingRequest, Role
from edge.pairing.service import (
    Admitted,
    AlreadyResolved,
    Denied,
    InvalidValue,
    NotFound,
    PairingError,
    PairingPolicy,
    PairingService,
    PendingLimitReached,
    RateLimitPolicy,
)
from edge.pairing.store import Store, StoreError, open_store
from edge.refusals import Denial

__all__ = [
    "Admitted",
    "AlreadyResolved",
    "Denial",
    "Denied",
    "Device",
    "DeviceKey",
    "Event",
    "InvalidValue",
    "Invite",
    "NotFound",
    "PairingError",
    "PairingPolicy",
    "PairingRequest",
    "PairingService",
    "PendingLimitReached",
    "RateLimitPolicy",
    "Role",
    "Store",
    "StoreError",
    "VerifiedIdentity",
    "open_store",
    "verify_device",
]
