"""Which process handles a store event: claims shared by the workers of one instance.

Every process reads the whole event log, so whatever it does with an event
(count it, write its audit line, send a webhook) would happen once per
process. A backend's ``claim(purpose, seqs)`` gives each seq to one process:
the processes of one ``edge serve`` share a claim file per purpose in the
directory ``edge serve`` makes for its workers (``WORKERS_DIR_ENV``, wiped at
every start); a lone process owns every event. The Redis backend claims
purposes that span replicas in Redis itself.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger("edge.store")

# Set by ``edge serve`` for its workers (prometheus-client's multiprocess directory).
WORKERS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class EventClaim:
    """Which store events this process handles, so each is handled once over all workers.

    Every worker reads the whole event log, so counting in each would multiply
    each event by the number of workers. With ``path`` (a file shared by the
    workers of one ``edge serve``, under an exclusive lock) a worker owns the
    events no worker claimed before it. The file keeps a floor (everything at
    or below is claimed) and up to ``max_ranges`` claimed ranges above it, so a
    worker that starts late cannot steal older events from the others. Without
    ``path`` this process is the only reader and owns every event.
    """

    def __init__(self, path: Path | None, *, max_ranges: int = 64) -> None:
        self.path = path
        self.max_ranges = max_ranges
        self._failed = False

    def claim(self, seqs: Iterable[int]) -> set[int]:
        """The seqs among ``seqs`` that this process owns (and must count) from now on."""
        wanted = set(seqs)
        if self.path is None or not wanted:
            return wanted
        try:
            owned = self._claim_locked(self.path, wanted)
        except OSError as exc:
            # Counting twice beats losing an audit line: own them all, say so once.
            if not self._failed:
                logger.error("event claim file %s unusable, counting locally: %s", self.path, exc)
            self._failed = True
            return wanted
        self._failed = False
        return owned

    def _claim_locked(self, path: Path, wanted: set[int]) -> set[int]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                try:
                    floor, ranges = _parse_claims(file.read())
                except ValueError as exc:
                    # Start afresh above this batch: these events may count twice, none later.
                    logger.error("event claim file %s was damaged, reset: %s", path, exc)
                    floor, ranges = min(wanted) - 1, []
                owned = {
                    seq
                    for seq in wanted
                    if seq > floor and not any(low <= seq <= high for low, high in ranges)
                }
                floor, ranges = _merge_claims(floor, ranges, owned, self.max_ranges)
                file.seek(0)
                file.truncate()
                file.write(json.dumps({"floor": floor, "ranges": ranges}))
                file.flush()
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)
        return owned


def _parse_claims(text: str) -> tuple[int, list[list[int]]]:
    if not text.strip():
        return 0, []
    data = json.loads(text)
    floor = data.get("floor") if isinstance(data, dict) else None
    ranges = data.get("ranges") if isinstance(data, dict) else None
    if (
        not isinstance(floor, int)
        or not isinstance(ranges, list)
        or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) for v in r)
            for r in ranges
        )
    ):
        raise ValueError("claim file holds no floor and ranges")
    return floor, ranges


def _merge_claims(
    floor: int, ranges: list[list[int]], owned: set[int], max_ranges: int
) -> tuple[int, list[list[int]]]:
    merged: list[list[int]] = []
    for low, high in sorted([*ranges, *([seq, seq] for seq in owned)]):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    while merged and (merged[0][0] <= floor + 1 or len(merged) > max_ranges):
        floor = max(floor, merged.pop(0)[1])
    return floor, merged


class InstanceClaims:
    """One ``EventClaim`` per purpose, in the workers' shared directory (if there is one)."""

    def __init__(self) -> None:
        self._claims: dict[str, EventClaim] = {}
        self._lock = threading.Lock()

    def claim(self, purpose: str, seqs: Iterable[int]) -> set[int]:
        with self._lock:
            claim = self._claims.get(purpose)
            if claim is None:
                directory = os.environ.get(WORKERS_DIR_ENV)
                path = Path(directory) / f"{purpose}-events.claim" if directory else None
                claim = self._claims[purpose] = EventClaim(path)
        return claim.claim(seqs)
