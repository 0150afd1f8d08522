"""Durations as the configuration and the CLI spell them: ``90s``, ``10m``, ``12h``, ``90d``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``12h`` or ``90d`` as seconds."""
    match = _DURATION.match(text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 10m, 12h or 90d")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
