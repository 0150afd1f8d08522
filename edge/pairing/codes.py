"""Short ids people read aloud and type: ``K7QF-2M9D``.

Crockford base32 (no I, L, O, U) so that a misread 0/O or 1/I/L still finds
the request. 40 random bits: a pending request cannot be guessed within its
lifetime, and the list holds at most a few hundred.
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_CHARS = 8
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_VALID = frozenset(ALPHABET)


def new_request_id() -> str:
    """A fresh ``XXXX-XXXX`` id from the system's secure random source."""
    chars = "".join(secrets.choice(ALPHABET) for _ in range(_ID_CHARS))
    return f"{chars[:4]}-{chars[4:]}"


def normalize_request_id(text: str) -> str | None:
    """The canonical ``XXXX-XXXX`` form of what a person typed, or None if it is not an id.

    Case-insensitive, the dash optional, surrounding spaces ignored, and the
    look-alikes O -> 0 and I/L -> 1 mapped as Crockford intends.
    """
    if not isinstance(text, str) or len(text) > 32:
        return None
    compact = text.strip().upper().translate(_LOOKALIKES)
    if len(compact) == _ID_CHARS + 1 and compact[4] == "-":
        compact = compact[:4] + compact[5:]
    if len(compact) != _ID_CHARS or not _VALID.issuperset(compact):
        return None
    return f"{compact[:4]}-{compact[4:]}"
