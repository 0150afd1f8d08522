"""Secrets: making them, hashing them, comparing them and keeping them in files.

Every secret Edge issues (gateway token, device tokens, invite codes) is
random with at least 128 bits of entropy, so a single SHA-256 is enough to
store it: a slow password KDF only helps against guessing low-entropy input.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

SECRET_BYTES = 32
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


class SecretFileError(OSError):
    """A secret file exists but cannot be used; the message names the file and the fix.

    It is an ``OSError`` so callers that already handle unreadable files handle
    this too.
    """


def generate_secret(nbytes: int = SECRET_BYTES) -> str:
    """``nbytes`` random bytes as base64url without padding (43 characters for 32 bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(b"=").decode("ascii")


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of the secret's UTF-8 bytes: what the store keeps instead of the secret.

    No slow KDF: the secrets are 256-bit (invite codes 128-bit) random values,
    far beyond brute force, and the hash must be cheap on every request.
    """
    return hashlib.sha256(_utf8(secret)).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    """Constant-time comparison; THE comparison used for every secret in Edge."""
    return hmac.compare_digest(_utf8(a), _utf8(b))


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate from JSON must compare unequal, not raise
    return text.encode("utf-8", "surrogatepass")


def file_is_private(path: Path) -> bool:
    """True when neither group nor others may read or write ``path``."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700; an existing directory is left as it is."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)


def read_secret_file(path: Path) -> str:
    """The secret kept in ``path`` (surrounding whitespace removed).

    Raises ``SecretFileError`` when the file cannot be read, is not UTF-8 text
    or is empty; ``FileNotFoundError`` when it does not exist.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise SecretFileError(f"{path} is a directory, not a secret file; remove it") from None
    except OSError as exc:
        raise SecretFileError(
            f"cannot read {path} ({exc.strerror or exc}); check its owner and mode (0600)"
        ) from None
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(
            f"{path} is not a text file; delete it to have a new secret generated"
        ) from None
    if not value:
        raise SecretFileError(f"{path} is empty; delete it to have a new secret generated")
    return value


def read_or_create_secret_file(path: Path) -> str:
    """The secret in ``path``; when the file is missing, create it with a new secret.

    Creation is atomic and never overwrites: the secret is written to a private
    temporary file and hard-linked into place, so two processes starting at
    once agree on one secret and no reader ever sees a half-written file. A
    world-readable existing file is still returned: ``file_is_private`` lets the
    caller warn about it (``edge doctor`` does).
    """
    try:
        return read_secret_file(path)
    except FileNotFoundError:
        pass
    ensure_private_dir(path.parent)
    tmp = _write_private_temp(path, (generate_secret() + "\n").encode("ascii"))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process won the race; its secret is the one
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return read_secret_file(path)


def write_secret_file(path: Path, secret: str) -> None:
    """Replace (or create) ``path`` with ``secret`` atomically, mode 0600."""
    if not secret or secret != secret.strip() or "\n" in secret:
        raise ValueError("a secret must be a non-empty single line without surrounding spaces")
    write_private_file(path, (secret + "\n").encode("utf-8"))


def write_private_file(path: Path, data: bytes) -> None:
    """Replace (or create) ``path`` atomically with mode 0600; the parent is created 0700."""
    ensure_private_dir(path.parent)
    tmp = _write_private_temp(path, data)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_private_temp(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # exactly 0600, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _fsync_dir(path: Path) -> None:
    """Make a rename or link durable; best effort where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
