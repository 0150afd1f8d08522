"""Secrets: random enough, compared in constant time, kept in private files."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

import pytest

from edge.pairing.service import PairingService
from edge.pairing.store import Store
from edge.pairing.tokens import (
    SecretFileError,
    file_is_private,
    generate_secret,
    hash_secret,
    read_or_create_secret_file,
    secrets_equal,
    write_private_file,
    write_secret_file,
)

BASE64URL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_32_bytes_of_unpadded_base64url_and_unique() -> None:
    secrets = {generate_secret() for _ in range(1000)}
    assert len(secrets) == 1000
    assert all(len(s) == 43 and set(s) <= BASE64URL for s in secrets)


def test_hash_is_hex_sha256_of_the_utf8_secret() -> None:
    assert hash_secret("abc") == hashlib.sha256(b"abc").hexdigest()


def test_secrets_equal_compares_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert secrets_equal("same", "same")
    assert not secrets_equal("same", "different")
    assert calls == [(b"same", b"same"), (b"same", b"different")]


def test_gateway_token_check_goes_through_the_constant_time_comparison(
    monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    service = PairingService(store, "the-gateway-token")
    assert service.check_gateway_token("the-gateway-token")
    assert not service.check_gateway_token("the-gateway-tokeX")
    assert calls == [
        (b"the-gateway-token", b"the-gateway-token"),
        (b"the-gateway-tokeX", b"the-gateway-token"),
    ]


def test_lone_surrogates_compare_unequal_instead_of_raising() -> None:
    assert not secrets_equal("\ud800", "x")
    assert len(hash_secret("\udfff")) == 64


def test_missing_secret_file_is_created_private_in_a_private_dir(tmp_path: Path) -> None:
    path = tmp_path / "new" / "gateway_token"
    secret = read_or_create_secret_file(path)
    assert len(secret) == 43
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert read_or_create_secret_file(path) == secret
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_creation_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "token"
        read_or_create_secret_file(path)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600


def test_racing_creators_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "token"
    barrier = threading.Barrier(8)
    results: list[str] = []

    def create() -> None:
        barrier.wait()
        results.append(read_or_create_secret_file(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert path.read_text().strip() == results[0]


def test_existing_file_is_read_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  configured-secret\n")
    assert read_or_create_secret_file(path) == "configured-secret"


def test_world_readable_file_is_returned_but_reported_not_private(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("configured-secret\n")
    path.chmod(0o644)
    assert read_or_create_secret_file(path) == "configured-secret"
    assert not file_is_private(path)
    path.chmod(0o600)
    assert file_is_private(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"  \n\n", "is empty"), (b"\xff\xfe\x00", "not a text file")],
)
def test_unusable_secret_file_gives_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(SecretFileError, match=message) as raised:
        read_or_create_secret_file(path)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value, OSError)


def test_directory_in_place_of_secret_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.mkdir()
    with pytest.raises(SecretFileError, match="is a directory"):
        read_or_create_secret_file(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_secret_file_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("secret\n")
    path.chmod(0)
    with pytest.raises(SecretFileError, match=r"check its owner and mode \(0600\)"):
        read_or_create_secret_file(path)


def test_write_secret_file_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "token"
    path.parent.mkdir()
    path.write_text("old\n")
    path.chmod(0o644)
    write_secret_file(path, "new-secret")
    assert path.read_text() == "new-secret\n"
    assert _mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["token"]


@pytest.mark.parametrize("bad", ["", " padded", "two\nlines"])
def test_write_secret_file_refuses_what_could_not_be_read_back(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="single line"):
        write_secret_file(tmp_path / "token", bad)


def test_private_file_keeps_binary_content(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    write_private_file(path, b"\x00\x01binary")
    assert path.read_bytes() == b"\x00\x01binary" and _mode(path) == 0o600
