"""Parsers for X-Forwarded-For and RFC 7239 Forwarded, bounded from the right.

Only the rightmost ``limit`` entries can matter (the walk goes right to left
and stops after ``limit`` hops), so both parsers read each header line
backwards and stop there. The Python-level work is bounded by ``limit``: runs
of separators, long entries and unbalanced quotes are skipped by the regex
engine over a reversed copy of the line, so a megabyte of stuffing costs a
copy of the line, not a loop over its characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)

# Lines up to this length are split outright: at most this many loop turns.
_SHORT_LINE = 256
# On a reversed line: skip separators, then take everything up to the next comma.
_XFF_ENTRY_REVERSED = re.compile(r"[\s,]*([^,]*)")

# Lines up to this length are split outright: at most this many loop turns.
_SHORT_LINE = 256
# On a reversed line: skip separators, then one element: plain characters or
# quoted strings. Reversed, a quote is escaped when an odd run of backslashes
# follows it. Possessive quantifiers: an unbalanced quote ends the match there
# instead of backtracking.
_FORWARDED_ELEMENT_REVERSED = re.compile(
    r'[\s,]*((?:[^",]|"(?:[^"]|"(?=(?:\\\\)*\\(?!\\)))*+")*+)', re.DOTALL
)

# The longest well-formed element is far shorter (for, by: 55; host: 260;
# proto: a few characters); anything longer is stuffing and is not parsed.
MAX_ELEMENT_LENGTH = 1024


def split_x_forwarded_for(lines: Sequence[str], limit: int) -> tuple[list[str], bool]:
    """The rightmost ``limit`` non-empty entries, in order, and whether more existed.

    All lines count as one list joined in order; entries are whitespace-stripped
    and empty ones dropped.
    """
    found: list[str] = []
    for line in reversed(lines):
        if len(line) <= _SHORT_LINE:
            # the common case: a few entries; splitting outright is cheapest
            for item in reversed(line.split(",")):
                item = item.strip()
                if item:
                    if len(found) == limit:
                        return found[::-1], True
                    found.append(item)
            continue
        reversed_line = line[::-1]
        position = 0
        while True:
            match = _XFF_ENTRY_REVERSED.match(reversed_line, position)
            if match is None:  # the pattern matches the empty string; kept for mypy
                break
            item = match.group(1)
            if not item:
                break
            if len(found) == limit:
                return found[::-1], True
            found.append(item[::-1].strip())
            position = match.end()
    return found[::-1], False


@dataclass(frozen=True, slots=True)
class ForwardedElement:
    """One element of a Forwarded header; ``valid`` is False when it breaks RFC 7239."""

    for_: str | None
    proto: str | None
    host: str | None
    by: str | None
    valid: bool
    raw: str = ""


def _elements_from_right(line: str) -> Iterator[str]:
    """Non-empty comma-separated elements of one line, rightmost first, quotes honoured.

    An unbalanced quote makes the rest of the line (to its left) one element,
    which then fails to parse: nothing the proxy appended to its right is lost.
    """
    reversed_line = line[::-1]
    size = len(reversed_line)
    position = 0
    while position < size:
        match = _FORWARDED_ELEMENT_REVERSED.match(reversed_line, position)
        if match is None:  # the pattern matches the empty string; kept for mypy
            return
        end = match.end()
        if end < size and reversed_line[end] == '"':
            rest = reversed_line[match.start(1) :][::-1].strip()
            if rest:
                yield rest
            return
        element = match.group(1)
        if element:
            stripped = element[::-1].strip()
            if stripped:
                yield stripped
        position = end if end > position else position + 1


def _split_pairs(element: str) -> list[str] | None:
    """Split on ``;`` outside quoted strings; None when a quote is left open."""
    pairs: list[str] = []
    current: list[str] = []
    in_quote = False
    escaped = False
    for char in element:
        if escaped:
            current.append(char)
            escaped = False
        elif in_quote and char == "\\":
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            in_quote = not in_quote
        elif char == ";" and not in_quote:
            pairs.append("".join(current))
            current = []
        else:
            current.append(char)
    if in_quote:
        return None
    pairs.append("".join(current))
    return pairs


def _unquote(value: str) -> str | None:
    if value.startswith('"'):
        if not _QUOTED_STRING.fullmatch(value):
            return None
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value if _TOKEN.fullmatch(value) else None


def parse_forwarded_element(text: str) -> ForwardedElement:
    """Parse ``pair *(";" pair)``; empty pairs are allowed, repeated parameters are not."""
    stripped = text.strip()
    invalid = ForwardedElement(None, None, None, None, False, stripped)
    if not stripped or len(stripped) > MAX_ELEMENT_LENGTH:
        return invalid
    pairs = _split_pairs(stripped)
    if pairs is None:
        return invalid
    values: dict[str, str] = {}
    for pair in pairs:
        pair = pair.strip()
        if not pair:
            continue  # RFC 7239: forwarded-element = [ pair ] *( ";" [ pair ] )
        key, eq, raw_value = pair.partition("=")
        key = key.strip().lower()
        if not eq or not _TOKEN.fullmatch(key) or key in values:
            return invalid
        value = _unquote(raw_value.strip())
        if value is None:
            return invalid
        values[key] = value  # extensions beyond for/by/proto/host are allowed and ignored
    if not values:
        return invalid
    return ForwardedElement(
        values.get("for"), values.get("proto"), values.get("host"), values.get("by"), True, stripped
    )


def parse_forwarded(lines: Sequence[str], limit: int) -> tuple[list[ForwardedElement], bool]:
    """The rightmost ``limit`` non-empty elements, in order, and whether more existed."""
    found: list[ForwardedElement] = []
    for line in reversed(lines):
        for raw in _elements_from_right(line):
            if len(found) == limit:
                return found[::-1], True
            found.append(parse_forwarded_element(raw))
    return found[::-1], False
