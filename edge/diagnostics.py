"""What a running gateway has seen that tells an operator what to fix, kept where the CLI reads it.

Two findings outlive a request. *Refusals by reason*: the refusals counted
in ``edge_auth_failures_total``, with the proxy anomaly the request came with,
so ``edge doctor`` can say "12 pages refused: proxy headers from 127.0.0.1,
an untrusted peer" instead of leaving the operator to guess from the
symptom. *A correctly forwarded request*: one that a trusted proxy sent with
a forwarding header proves the proxy on this host forwards as it should, so
the start-up warning about a same-host proxy (whose header-less routes would
look local) has done its job and clears, for this run and the next.

Each worker keeps its own counts in memory and writes them to
``<data_dir>/status/<pid>.diagnostics.json`` from housekeeping (never on the
event loop); the forwarded request is recorded once in
``<data_dir>/proxy-forwarded.json``. The module imports no ASGI layer: the
CLI reads these files without it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.hostcheck import process_alive, running_reverse_proxies, same_host_proxy_advice
from edge.running import read_json, status_dir, write_private_json

RECENT = 20  # refusals kept per worker, newest last
FORWARDED_FILE = "proxy-forwarded.json"


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A request a trusted proxy forwarded with a header: where from, which header, for whom."""

    at: float
    peer: str | None
    header: str
    client: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    at: float
    reason: str
    peer: str | None
    anomaly: str | None


def read_forwarded(data_dir: Path) -> Forwarded | None:
    """The correctly forwarded request recorded in ``data_dir``, if one ever arrived."""
    data = read_json(data_dir / FORWARDED_FILE)
    if not isinstance(data, dict):
        return None
    try:
        return Forwarded(
            at=float(data["at"]),
            peer=data.get("peer"),
            header=str(data["header"]),
            client=data.get("client"),
        )
    except (KeyError, TypeError, ValueError):
        return None


def describe_forwarded(forwarded: Forwarded) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(forwarded.at))
    return (
        f"a request forwarded by {forwarded.peer or 'a unix socket'} with {forwarded.header} "
        f"(for {forwarded.client or 'an unknown client'}) arrived at {when}"
    )


class Diagnostics:
    """One worker's record; thread-safe (the loop records, housekeeping writes)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # housekeeping and a first forwarded request may race
        self._counts: Counter[str] = Counter()
        self._recent: deque[Refused] = deque(maxlen=RECENT)
        self._dirty = False
        self.forwarded: Forwarded | None = read_forwarded(data_dir)
        self._forwarded_pending = False
        # The reverse proxies running on this host, as housekeeping last read them from /proc,
        # so that answering a request never reads /proc.
        self.proxies: tuple[str, ...] = ()

    # -- recording (on the event loop: memory only) ------------------------------------------

    def refused(self, reason: str, peer: str | None, anomalies: tuple[str, ...]) -> None:
        with self._lock:
            self._counts[reason] += 1
            self._recent.append(
                Refused(time.time(), reason, peer, anomalies[0] if anomalies else None)
            )
            self._dirty = True

    def forwarded_by(self, peer: str | None, header: str, client: str | None) -> bool:
        """Note a correctly forwarded request; True the first time (the warning clears now)."""
        if self.forwarded is not None:
            return False
        with self._lock:
            if self.forwarded is not None:
                return False
            self.forwarded = Forwarded(time.time(), peer, header, client)
            self._forwarded_pending = True
        return True

    # -- reading ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": dict(self._counts),
                "recent": [asdict(entry) for entry in self._recent],
            }

    # -- writing (blocking: housekeeping, or the blocking door) --------------------------------

    def path(self) -> Path:
        return status_dir(self.data_dir) / f"{os.getpid()}.diagnostics.json"

    def refresh_proxies(self) -> tuple[str, ...]:
        """Blocking: read /proc again for reverse proxies running on this host."""
        self.proxies = tuple(running_reverse_proxies())
        return self.proxies

    def flush(self) -> None:
        """Write what changed since the last flush; a failed write is retried next time."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        if self._forwarded_pending and self.forwarded is not None:
            with contextlib.suppress(OSError):
                write_private_json(self.data_dir / FORWARDED_FILE, asdict(self.forwarded))
                self._forwarded_pending = False
        if not self._dirty:
            return
        snapshot = self.snapshot()
        self._dirty = False
        try:
            write_private_json(self.path(), snapshot)
        except OSError:
            self._dirty = True

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path().unlink()


def read_refusals(data_dir: Path) -> tuple[Counter[str], list[Refused]]:
    """Every live worker's refusals: counts by reason, and the recent ones, newest last."""
    counts: Counter[str] = Counter()
    recent: list[Refused] = []
    directory = status_dir(data_dir)
    if not directory.is_dir():
        return counts, recent
    for path in directory.glob("*.diagnostics.json"):
        pid = path.name.split(".", 1)[0]
        if not pid.isdigit() or not process_alive(int(pid)):
            continue
        data = read_json(path)
        if not isinstance(data, dict):
            continue
        for reason, count in dict(data.get("counts") or {}).items():
            counts[str(reason)] += int(count)
        for entry in data.get("recent") or []:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                recent.append(
                    Refused(
                        float(entry["at"]),
                        str(entry["reason"]),
                        entry.get("peer"),
                        entry.get("anomaly"),
                    )
                )
    recent.sort(key=lambda entry: entry.at)
    return counts, recent


@dataclass(frozen=True, slots=True)
class SameHostProxy:
    """Reverse proxies running on this host, and whether that is worth a warning.

    Under ``local.peer_check: address`` a same-host proxy route that forwards
    no header makes its visitors look like this machine's own browser. The
    warning says so until a request it forwarded with a header arrived
    (``forwarded``): then the proxy is known to forward as it should.
    """

    proxies: tuple[str, ...]
    at_risk: bool
    forwarded: Forwarded | None

    @property
    def warning(self) -> str | None:
        if not self.at_risk or self.forwarded is not None:
            return None
        return same_host_proxy_advice(list(self.proxies))

    def to_dict(self) -> dict[str, Any]:
        return {
            "proxies": list(self.proxies),
            "warning": self.warning,
            "forwarded": None if self.forwarded is None else asdict(self.forwarded),
        }


def same_host_proxy(
    loopback: bool,
    peer_check: str,
    forwarded: Forwarded | None,
    proxies: tuple[str, ...] | None = None,
) -> SameHostProxy:
    """Under ``peer_check: uid`` a proxy's visitors are never local, so there is no risk.

    Blocking when ``proxies`` is not given: it reads /proc.
    """
    found = tuple(running_reverse_proxies()) if proxies is None else proxies
    return SameHostProxy(found, bool(found) and loopback and peer_check == "address", forwarded)
