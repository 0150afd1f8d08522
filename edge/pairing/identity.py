"""Device identity: an Ed25519 key made on the client, proven on every connect.

The client signs ``edge-connect-v1\\n<device id>\\n<nonce>\\n<signedAt>\\n<role>``
with the server's fresh nonce, so a captured signature is worthless on any
other connection and for any other role. The device id is the SHA-256 of the
public key, so an id cannot be claimed without the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.pairing.tokens import write_private_file
from edge.refusals import Denial

CONNECT_CONTEXT = "edge-connect-v1"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
DEFAULT_MAX_SKEW_MS = 120_000
# signedAt beyond this is no plausible clock reading (and JSON numbers past it lose precision).
_MAX_SIGNED_AT_MS = 2**53

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_DEVICE_FIELDS = ("id", "publicKey", "signedAt", "signature")


class DeviceKeyError(ValueError):
    """A device key file cannot be used; the message names the file and the fix."""


def device_id_for(public_key: bytes) -> str:
    """Lowercase hex SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(public_key).hexdigest()


def connect_payload(device_id: str, nonce: str, signed_at_ms: int, role: str) -> bytes:
    """The exact bytes a device signs to answer a challenge."""
    return f"{CONNECT_CONTEXT}\n{device_id}\n{nonce}\n{signed_at_ms}\n{role}".encode()


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, length: int) -> bytes | None:
    """Strict base64url of exactly ``length`` bytes; padding optional; None on any problem.

    Strict means one text per value: no whitespace, no standard-alphabet
    characters, no stray bits in the last character.
    """
    if not isinstance(text, str):
        return None
    unpadded = text.rstrip("=")
    expected = -(-length * 4 // 3)  # ceil(length * 4 / 3)
    if len(unpadded) != expected or not _B64URL.fullmatch(unpadded):
        return None
    if unpadded != text and len(text) != -(-length // 3) * 4:
        return None
    try:
        data = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(data) != length or b64url_encode(data) != unpadded:
        return None
    return data


@dataclass(frozen=True)
class VerifiedIdentity:
    """A device that proved it holds the key for ``device_id`` on this connection."""

    device_id: str
    public_key: str  # canonical base64url, unpadded


def verify_device(
    device: object,
    nonce: str,
    role: str,
    now_ms: int,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> VerifiedIdentity | Denial:
    """Check the ``device`` object of a connect frame against the server's nonce.

    The signature is checked before freshness, so a genuine but old signature
    is reported as expired (a clock problem the user can fix) while a forged
    one is always reported as invalid (and counts towards the lockout).
    """
    if device is None:
        return Denial.DEVICE_IDENTITY_REQUIRED
    if not isinstance(device, dict) or any(field not in device for field in _DEVICE_FIELDS):
        return Denial.INVALID_HANDSHAKE
    claimed_id = device["id"]
    public_key_text = device["publicKey"]
    signed_at = device["signedAt"]
    signature_text = device["signature"]
    if not (
        isinstance(claimed_id, str)
        and isinstance(public_key_text, str)
        and isinstance(signature_text, str)
        and type(signed_at) is int
        and 0 <= signed_at <= _MAX_SIGNED_AT_MS
    ):
        return Denial.INVALID_HANDSHAKE
    public_key = b64url_decode(public_key_text, PUBLIC_KEY_BYTES)
    if public_key is None:
        return Denial.INVALID_HANDSHAKE
    device_id = device_id_for(public_key)
    if claimed_id != device_id:
        return Denial.DEVICE_IDENTITY_MISMATCH
    signature = b64url_decode(signature_text, SIGNATURE_BYTES)
    if signature is None:
        return Denial.DEVICE_SIGNATURE_INVALID
    payload = connect_payload(device_id, nonce, signed_at, role)
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return Denial.DEVICE_SIGNATURE_INVALID
    if abs(now_ms - signed_at) > max_skew_ms:
        return Denial.DEVICE_SIGNATURE_EXPIRED
    return VerifiedIdentity(device_id=device_id, public_key=b64url_encode(public_key))


class DeviceKey:
    """The client side of a device identity (``edge pair`` and tests)."""

    __slots__ = ("_private", "_public_raw")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self._public_raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> DeviceKey:
        """Read a PEM (PKCS#8) Ed25519 private key written by ``save``."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DeviceKeyError(
                f"cannot read device key {path} ({exc.strerror or exc}); check the path and "
                "its mode (0600)"
            ) from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise DeviceKeyError(
                f"{path} is not an unencrypted PEM private key; move it away to create a new "
                "device (which must then be paired again)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise DeviceKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def save(self, path: Path) -> None:
        """Write the private key as PEM, atomically, mode 0600 (directory 0700)."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private_file(path, pem)

    @property
    def public_key_b64(self) -> str:
        return b64url_encode(self._public_raw)

    @property
    def device_id(self) -> str:
        return device_id_for(self._public_raw)

    def sign_connect(self, nonce: str, signed_at_ms: int, role: str) -> str:
        """Base64url Ed25519 signature of the connect payload."""
        payload = connect_payload(self.device_id, nonce, signed_at_ms, role)
        return b64url_encode(self._private.sign(payload))

    def device_field(
        self, nonce: str, role: str, signed_at_ms: int | None = None
    ) -> dict[str, object]:
        """The ``device`` object of a connect frame answering ``nonce``."""
        signed_at = int(time.time() * 1000) if signed_at_ms is None else signed_at_ms
        return {
            "id": self.device_id,
            "publicKey": self.public_key_b64,
            "signedAt": signed_at,
            "signature": self.sign_connect(nonce, signed_at, role),
        }

    def __repr__(self) -> str:  # never print key material by accident
        return f"DeviceKey(device_id={self.device_id[:12]}...)"
