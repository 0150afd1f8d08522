"""Ed25519 device identity: the signature binds device, nonce, time and role."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from edge.pairing.identity import (
    CONNECT_CONTEXT,
    DeviceKey,
    DeviceKeyError,
    VerifiedIdentity,
    b64url_decode,
    b64url_encode,
    connect_payload,
    device_id_for,
    verify_device,
)
from edge.refusals import Denial

NOW_MS = 1_700_000_000_000
NONCE = "bm9uY2Utb2YtdGhlLXNlcnZlci0zMi1ieXRlcy1sb25nISE"


@pytest.fixture(scope="module")
def key() -> DeviceKey:
    return DeviceKey.generate()


def test_device_id_is_hex_sha256_of_the_raw_public_key(key: DeviceKey) -> None:
    raw = b64url_decode(key.public_key_b64, 32)
    assert raw is not None
    assert key.device_id == hashlib.sha256(raw).hexdigest() == device_id_for(raw)


def test_connect_payload_is_the_documented_text() -> None:
    assert connect_payload("ab", "n", 5, "user") == b"edge-connect-v1\nab\nn\n5\nuser"
    assert CONNECT_CONTEXT == "edge-connect-v1"


def test_signature_verifies_with_the_raw_public_key(key: DeviceKey) -> None:
    field = key.device_field(NONCE, "admin", NOW_MS)
    assert field["signedAt"] == NOW_MS and field["id"] == key.device_id
    result = verify_device(field, NONCE, "admin", NOW_MS)
    assert result == VerifiedIdentity(key.device_id, key.public_key_b64)


def test_padded_public_key_is_accepted_and_stored_canonically(key: DeviceKey) -> None:
    field = key.device_field(NONCE, "user", NOW_MS)
    field["publicKey"] = key.public_key_b64 + "="
    result = verify_device(field, NONCE, "user", NOW_MS)
    assert isinstance(result, VerifiedIdentity) and result.public_key == key.public_key_b64


def test_signature_for_another_nonce_is_invalid(key: DeviceKey) -> None:
    field = key.device_field("an-old-nonce", "user", NOW_MS)
    assert verify_device(field, NONCE, "user", NOW_MS) is Denial.DEVICE_SIGNATURE_INVALID


def test_signature_for_another_role_is_invalid(key: DeviceKey) -> None:
    field = key.device_field(NONCE, "user", NOW_MS)
    assert verify_device(field, NONCE, "admin", NOW_MS) is Denial.DEVICE_SIGNATURE_INVALID


def test_altered_signed_at_is_invalid_not_expired(key: DeviceKey) -> None:
    field = key.device_field(NONCE, "user", NOW_MS)
    field["signedAt"] = NOW_MS - 1
    assert verify_device(field, NONCE, "user", NOW_MS) is Denial.DEVICE_SIGNATURE_INVALID


@pytest.mark.parametrize("offset_ms", [-120_001, 120_001, -86_400_000])
def test_genuine_signature_outside_the_skew_is_expired(key: DeviceKey, offset_ms: int) -> None:
    field = key.device_field(NONCE, "user", NOW_MS + offset_ms)
    assert verify_device(field, NONCE, "user", NOW_MS) is Denial.DEVICE_SIGNATURE_EXPIRED


@pytest.mark.parametrize("offset_ms", [-120_000, 0, 120_000])
def test_signature_within_the_skew_is_fresh(key: DeviceKey, offset_ms: int) -> None:
    field = key.device_field(NONCE, "user", NOW_MS + offset_ms)
    assert isinstance(verify_device(field, NONCE, "user", NOW_MS), VerifiedIdentity)


def test_claimed_id_of_another_key_is_a_mismatch(key: DeviceKey) -> None:
    field = key.device_field(NONCE, "user", NOW_MS)
    field["id"] = DeviceKey.generate().device_id
    assert verify_device(field, NONCE, "user", NOW_MS) is Denial.DEVICE_IDENTITY_MISMATCH


def test_another_key_signing_for_a_known_id_is_a_mismatch(key: DeviceKey) -> None:
    thief = DeviceKey.generate()
    field = thief.device_field(NONCE, "user", NOW_MS)
    field["id"] = key.device_id
    assert verify_device(field, NONCE, "user", NOW_MS) is Denial.DEVICE_IDENTITY_MISMATCH


def test_missing_device_requires_identity() -> None:
    assert verify_device(None, NONCE, "user", NOW_MS) is Denial.DEVICE_IDENTITY_REQUIRED


def _field(key: DeviceKey, **changes: Any) -> dict[str, Any]:
    field = key.device_field(NONCE, "user", NOW_MS)
    for name, value in changes.items():
        if value is ...:
            del field[name]
        else:
            field[name] = value
    return field


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"id": ...}, Denial.INVALID_HANDSHAKE),
        ({"publicKey": ...}, Denial.INVALID_HANDSHAKE),
        ({"signedAt": ...}, Denial.INVALID_HANDSHAKE),
        ({"signature": ...}, Denial.INVALID_HANDSHAKE),
        ({"id": 7}, Denial.INVALID_HANDSHAKE),
        ({"signedAt": "1700000000000"}, Denial.INVALID_HANDSHAKE),
        ({"signedAt": 1.7e12}, Denial.INVALID_HANDSHAKE),
        ({"signedAt": True}, Denial.INVALID_HANDSHAKE),
        ({"signedAt": -1}, Denial.INVALID_HANDSHAKE),
        ({"signedAt": 10**5000}, Denial.INVALID_HANDSHAKE),
        ({"publicKey": "short"}, Denial.INVALID_HANDSHAKE),
        ({"publicKey": None}, Denial.INVALID_HANDSHAKE),
        ({"signature": "AAAA"}, Denial.DEVICE_SIGNATURE_INVALID),
        ({"signature": "A" * 86}, Denial.DEVICE_SIGNATURE_INVALID),
        ({"id": "AB" * 32}, Denial.DEVICE_IDENTITY_MISMATCH),
    ],
)
def test_malformed_device_objects_are_refused_specifically(
    key: DeviceKey, changes: dict[str, Any], expected: Denial
) -> None:
    assert verify_device(_field(key, **changes), NONCE, "user", NOW_MS) is expected


@pytest.mark.parametrize("device", [[], "device", 42, {}, {"id": "x"}])
def test_device_of_the_wrong_type_is_an_invalid_handshake(device: object) -> None:
    assert verify_device(device, NONCE, "user", NOW_MS) is Denial.INVALID_HANDSHAKE


def test_standard_base64_public_key_is_refused(key: DeviceKey) -> None:
    raw = b64url_decode(key.public_key_b64, 32)
    assert raw is not None
    standard = base64.b64encode(raw).decode()
    if standard.rstrip("=") == key.public_key_b64:  # no + or / in this key: force one
        standard = "+" + standard[1:]
    result = verify_device(_field(key, publicKey=standard), NONCE, "user", NOW_MS)
    assert result in {Denial.INVALID_HANDSHAKE, Denial.DEVICE_IDENTITY_MISMATCH}


@pytest.mark.parametrize(
    ("text", "length", "expected"),
    [
        ("AAEC", 3, b"\x00\x01\x02"),
        ("AAE", 2, b"\x00\x01"),
        ("AAE=", 2, b"\x00\x01"),
        ("AAE==", 2, None),  # wrong padding
        ("AAF", 2, None),  # stray bits in the last character
        ("AA E", 3, None),
        ("AA+/", 3, None),
        ("AAEC", 4, None),
        ("", 0, b""),
        ("=", 0, None),
    ],
)
def test_b64url_decode_is_strict(text: str, length: int, expected: bytes | None) -> None:
    assert b64url_decode(text, length) == expected


@given(st.binary(max_size=80))
def test_b64url_round_trips(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data), len(data)) == data


@given(st.text(max_size=120), st.integers(min_value=0, max_value=80))
def test_b64url_decode_never_raises(text: str, length: int) -> None:
    result = b64url_decode(text, length)
    assert result is None or len(result) == length


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=100),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(["id", "publicKey", "signedAt", "signature"]), json_values))
def test_verify_device_never_raises_on_arbitrary_json(device: dict[str, Any]) -> None:
    assert isinstance(verify_device(device, NONCE, "user", NOW_MS), Denial)


def test_key_file_round_trips_with_mode_0600(tmp_path: Path, key: DeviceKey) -> None:
    path = tmp_path / "keys" / "device.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = DeviceKey.load(path)
    assert loaded.device_id == key.device_id
    field = loaded.device_field(NONCE, "user", NOW_MS)
    assert isinstance(verify_device(field, NONCE, "user", NOW_MS), VerifiedIdentity)


def test_missing_key_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DeviceKeyError, match=r"cannot read device key .*missing\.pem"):
        DeviceKey.load(tmp_path / "missing.pem")


def test_garbage_key_file_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "device.pem"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DeviceKeyError, match="not an unencrypted PEM private key"):
        DeviceKey.load(path)


def test_key_of_another_algorithm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.pem"
    pem = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    with pytest.raises(DeviceKeyError, match="not an Ed25519 key"):
        DeviceKey.load(path)


def test_key_repr_shows_no_key_material(key: DeviceKey) -> None:
    assert key.public_key_b64 not in repr(key)
    assert key.device_id[:12] in repr(key)
