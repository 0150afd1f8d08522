"""The one way Edge parses JSON a client sent: bounded in size and depth (attack: ``[[[[…``).

``json.loads`` recurses once per nesting level, so a 64 KiB frame of ``[``
raises ``RecursionError``, which no ``except ValueError`` catches: the
control socket dropped with 1006 and the REST API answered 500 with a
traceback. Here the nesting is counted first, in one pass over the brackets
outside strings, so too deep, too large and invalid input all raise
``JSONRefused`` with a reason the caller can put in a 400 or a close frame.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
MAX_BYTES = 64 * 1024

# A JSON string (escapes included), or one bracket.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


class JSONRefused(ValueError):
    """Client JSON Edge will not read; the message is the reason, fit for a client to see."""


def depth_of(text: str, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``text`` (strings skipped).

    With ``stop_above``, counting stops at the first level deeper than it.
    """
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and depth > stop_above:
                    break
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def loads(data: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse client JSON, or raise ``JSONRefused`` (too large, too deep, or not JSON)."""
    if len(data) > max_bytes:
        raise JSONRefused(f"JSON over {max_bytes // 1024} KiB")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JSONRefused("JSON is not UTF-8") from None
    if depth_of(data, stop_above=max_depth) > max_depth:
        raise JSONRefused(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise JSONRefused("not valid JSON") from None
