"""Prometheus metrics: every decision the gateway makes is countable here.

Labels are bounded by construction: kinds, decisions, reasons, outcomes and
pairing events are closed sets, upstream labels are configured names. No label
ever holds a path, an address, a device id or a token.

With several uvicorn workers, ``prepare_multiprocess_dir`` must run in the
parent before the workers start (``edge serve`` does it); each worker then
writes its own files and ``render`` aggregates them. Gauges state how they
aggregate: live sockets add up over live workers; store-derived gauges (every
worker reads the same store) take the newest value.

Store events (pairing, revocation, lockouts) reach every worker, because each
one reads the whole event log. The store's ``claim`` makes sure each event is
counted by exactly one of them, so an instance (all its workers) counts each event
once. Replicas sharing a store each count every event: combine instances with
``max``, not ``sum`` (docs/metrics.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client import values as _values
from prometheus_client.metrics_core import Metric

from edge.heads import REASONS as HEAD_REFUSALS
from edge.hostcheck import process_alive
from edge.refusals import Denial

# `_created` series double the exposition and no dashboard here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

logger = logging.getLogger("edge.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format every Prometheus version reads; edge's metric names need nothing newer.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("http", "websocket")
DECISIONS = ("local", "paired", "denied")
PUBLIC_DECISION = "public"  # anonymous HTTP requests to public routes (/healthz, the UI, whoami)
PROXY_OUTCOMES = (
    "none",
    "trusted",
    "untrusted_proxy_headers",
    "malformed_forwarded",
    "too_many_hops",
)
PEER_OWNERS = ("same-user", "other-user", "unknown")
PAIRING_EVENTS = ("requested", "approved", "rejected", "expired", "revoked", "rotated", "invited")
AUTH_FAILURE_REASONS = tuple(denial.metric_label for denial in Denial)
ROLES = ("admin", "user")
CODE_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_DECISION_LABELS = {"approved": "approved", "rejected": "rejected", "expired": "expired"}
_DEVICE_EVENT_LABELS = {
    "device.revoked": "revoked",
    "device.expired": "expired",
    "invite.used": "invited",  # a device paired by an invite, without an operator's approval
}
_STATE_EVENT_PREFIXES = ("pairing.", "device.", "invite.used")


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir(path: Path) -> None:
    """Create (or wipe) the directory workers share, and point this process tree at it.

    Wiping matters: files left by the previous run would add its totals to this one.
    """
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    # prometheus-client picks its value class when it is imported, and this process may
    # have imported it before the directory was known (``edge serve`` with one worker runs
    # the app in this very process). No metric exists yet, so choosing again is safe.
    _values.ValueClass = _values.get_value_class()  # type: ignore[no-untyped-call]


def mark_worker_dead(pid: int) -> None:
    """Drop a worker's live gauges; ``Gateway.stop`` calls it as the worker exits."""
    if multiprocess_enabled():
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def forget_dead_workers(directory: Path) -> list[int]:
    """Mark dead every worker whose live-gauge files remain but whose process is gone.

    A worker killed outright (OOM, SIGKILL) never runs ``Gateway.stop``; without
    this its open sockets would stay in ``edge_websocket_connections`` forever.
    """
    dead: set[int] = set()
    for file in directory.glob("gauge_live*_*.db"):
        suffix = file.stem.rpartition("_")[2]
        if suffix.isdigit() and not process_alive(int(suffix)):
            dead.add(int(suffix))
    for pid in sorted(dead):
        _multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
    return sorted(dead)


def pairing_event_label(event_type: str, data: Mapping[str, object]) -> str | None:
    """The ``event`` label for a store event, or None when it is not a counted pairing event.

    A refreshed request (the same device asking again while pending) is not a
    new request, and a token re-issued on reconnect is not an operator's
    rotation; counting either would make the rates meaningless.
    """
    if event_type == "pairing.requested":
        return None if data.get("refreshed") else "requested"
    if event_type == "pairing.resolved":
        return _DECISION_LABELS.get(str(data.get("decision")))
    if event_type == "device.token_rotated":
        return "rotated" if data.get("reason") == "rotate" else None
    return _DEVICE_EVENT_LABELS.get(event_type)


def changes_pairing_state(event_type: str) -> bool:
    """Whether an event can change the pending-request or paired-device gauges."""
    return event_type.startswith(_STATE_EVENT_PREFIXES)


def code_class(status: int | None) -> str:
    if status is None or not 100 <= status <= 599:
        return "error"
    return f"{status // 100}xx" if status >= 200 else "2xx"


class _FlushingRegistry(CollectorRegistry):
    """A registry that hands the batched per-request counts to their series before any read.

    Every reader goes through ``collect`` (``generate_latest``, ``get_sample_value``),
    so none sees totals behind what this worker has counted.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        super().__init__(auto_describe=True)
        self._flush = flush

    def collect(self) -> Iterable[Metric]:
        self._flush()
        yield from super().collect()


class _Tally:
    """Per-request counts in plain integers; ``flush`` adds what is new to the series.

    Counting (``Metrics.observe_request``, ``Metrics.proxy_outcome``) happens on
    the event loop, once per request, where prometheus-client would take a lock
    three times and walk the histogram's buckets in Python. Here it is three
    dictionary updates and a ``bisect`` on the loop's thread alone. Only one
    worker batches: with several, another process answers scrapes from the
    shared files at any moment, so each request is written there at once and
    the totals are exact whoever answers. The totals only grow; ``flush``
    (under its own lock, from any thread) adds to each series the difference
    from what it added last, so a count made while a flush runs is added by the
    next one and none is lost or added twice.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = dict.fromkeys(metrics._request_counts, 0)
        self.outcomes: dict[str, int] = dict.fromkeys(PROXY_OUTCOMES, 0)
        bounds = (*(float(b) for b in REQUEST_BUCKETS), float("inf"))
        self.bounds = bounds
        # per kind: observations per bucket (not cumulative, as prometheus-client keeps them)
        self.buckets: dict[str, list[int]] = {kind: [0] * len(bounds) for kind in KINDS}
        self.sums: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self._added_requests = dict(self.requests)
        self._added_outcomes = dict(self.outcomes)
        self._added_buckets = {kind: [0] * len(bounds) for kind in KINDS}
        self._added_sums = dict(self.sums)

    def flush(self, metrics: Metrics) -> None:
        with self._lock:
            for key, total in list(self.requests.items()):
                added = self._added_requests.get(key, 0)
                if total != added:
                    metrics._request_counts[key].inc(total - added)
                    self._added_requests[key] = total
            for outcome, total in list(self.outcomes.items()):
                added = self._added_outcomes.get(outcome, 0)
                if total != added:
                    metrics._proxy_outcome_counts[outcome].inc(total - added)
                    self._added_outcomes[outcome] = total
            for kind, counts in self.buckets.items():
                added_counts = self._added_buckets[kind]
                if counts == added_counts:
                    continue
                # prometheus-client keeps a histogram child as one value per bucket (each
                # observation adds to the first bucket it fits) and one for the sum.
                child = metrics._request_durations[kind]
                snapshot = list(counts)
                seconds = self.sums[kind]
                for index, count in enumerate(snapshot):
                    if count != added_counts[index]:
                        child._buckets[index].inc(count - added_counts[index])
                child._sum.inc(seconds - self._added_sums[kind])
                self._added_buckets[kind] = snapshot
                self._added_sums[kind] = seconds


class Metrics:
    """The gateway's metrics, registered in their own registry (one per app)."""

    def __init__(self, version: str) -> None:
        self.registry: CollectorRegistry = _FlushingRegistry(self.flush)
        r = self.registry
        self.requests = Counter(
            "edge_requests",
            "HTTP requests and WebSocket handshakes by kind and decision "
            "(local, paired, denied; public for anonymous requests to public routes).",
            ["kind", "decision"],
            registry=r,
        )
        self.request_duration = Histogram(
            "edge_request_duration_seconds",
            "Time to answer an HTTP request or complete a WebSocket handshake.",
            ["kind"],
            registry=r,
            buckets=REQUEST_BUCKETS,
        )
        self.auth_failures = Counter(
            "edge_auth_failures",
            "Refused authentications by reason (one per 401/403 cause and 1008 close reason).",
            ["reason"],
            registry=r,
        )
        self.auth_lockouts = Counter(
            "edge_auth_lockouts",
            "Client addresses locked out after too many failed attempts.",
            registry=r,
        )
        self.pairing_events = Counter(
            "edge_pairing_events", "Pairing lifecycle events.", ["event"], registry=r
        )
        self.pending = Gauge(
            "edge_pairing_requests_pending",
            "Pairing requests waiting for an operator.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.devices = Gauge(
            "edge_devices_paired",
            "Paired devices by role.",
            ["role"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.websockets = Gauge(
            "edge_websocket_connections",
            "Open control WebSocket connections (authenticated or not).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.proxy_headers = Counter(
            "edge_proxy_headers",
            "Proxy-header outcomes per resolved request: the spoofing and misconfiguration signal.",
            ["outcome"],
            registry=r,
        )
        self.peer_lookups = Counter(
            "edge_peer_lookups",
            "Connection owners asked of the kernel (one per loopback or unix-socket connection, "
            "never per request), by what was found: same-user, other-user or unknown.",
            ["owner"],
            registry=r,
        )
        self.request_heads_refused = Counter(
            "edge_request_heads_refused",
            "Connections closed before a request: head too large, too slow, or too many "
            "connections from one address (edge.heads).",
            ["reason"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "edge_upstream_requests",
            "Requests forwarded to upstreams by response class.",
            ["upstream", "code_class"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "edge_upstream_duration_seconds",
            "Upstream response time (until the response headers).",
            ["upstream"],
            registry=r,
        )
        self.store_up = Gauge(
            "edge_store_up",
            "1 while the pairing store (SQLite or Redis) answers, 0 while it does not.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.store_up.set(1)
        self.build_info = Gauge(
            "edge_build_info",
            "Edge build information; always 1.",
            ["version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.build_info.labels(version=version).set(1)
        # Every bounded series exists from the start, so rate() and alerts see zeros.
        for kind in KINDS:
            self.request_duration.labels(kind=kind)
            for decision in DECISIONS:
                self.requests.labels(kind=kind, decision=decision)
        self.requests.labels(kind="http", decision=PUBLIC_DECISION)
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason=reason)
        for outcome in PROXY_OUTCOMES:
            self.proxy_headers.labels(outcome=outcome)
        for owner in PEER_OWNERS:
            self.peer_lookups.labels(owner=owner)
        for reason in HEAD_REFUSALS:
            self.request_heads_refused.labels(reason=reason)
        for event in PAIRING_EVENTS:
            self.pairing_events.labels(event=event)
        for role in ROLES:
            self.devices.labels(role=role)
        # The per-request series, bound once: ``labels()`` costs more than the increment.
        self._request_counts = {
            (kind, decision): self.requests.labels(kind=kind, decision=decision)
            for kind in KINDS
            for decision in (*DECISIONS, PUBLIC_DECISION)
        }
        self._request_durations = {kind: self.request_duration.labels(kind=kind) for kind in KINDS}
        self._auth_failure_counts = {
            reason: self.auth_failures.labels(reason=reason) for reason in AUTH_FAILURE_REASONS
        }
        self._proxy_outcome_counts = {
            outcome: self.proxy_headers.labels(outcome=outcome) for outcome in PROXY_OUTCOMES
        }
        self._tally = _Tally(self)
        self._requests = self._tally.requests
        self._outcomes = self._tally.outcomes
        self._buckets = self._tally.buckets
        self._sums = self._tally.sums
        self._bounds = self._tally.bounds
        # With several workers another process may answer the scrape from the shared files at
        # any moment, so there each request is written at once; batching is for one worker.
        self._batching = not multiprocess_enabled()

    def flush(self) -> None:
        """Hand the per-request counts made since the last flush to their series.

        Reading this registry does it first (``_FlushingRegistry``), so every
        reader sees exact totals.
        """
        self._tally.flush(self)

    def observe_request(self, kind: str, decision: str, seconds: float) -> None:
        """Count one HTTP request or WebSocket handshake and its duration (on the event loop)."""
        key = (kind, decision)
        if self._batching and key in self._requests and kind in self._sums:
            self._requests[key] += 1
            self._buckets[kind][bisect_left(self._bounds, seconds)] += 1
            self._sums[kind] += seconds
            return
        # several workers, or a label outside the bounded sets: straight to prometheus-client
        count = self._request_counts.get(key)
        if count is None:
            count = self.requests.labels(kind=kind, decision=decision)
        count.inc()
        duration = self._request_durations.get(kind)
        if duration is None:
            duration = self.request_duration.labels(kind=kind)
        duration.observe(seconds)

    def auth_failure(self, reason: str) -> None:
        count = self._auth_failure_counts.get(reason)
        if count is None:
            count = self.auth_failures.labels(reason=reason)
        count.inc()

    def store_event(self, event_type: str, data: Mapping[str, object]) -> None:
        """Count one store event; only for events the store's ``claim`` gave this process."""
        if event_type == "auth.lockout":
            self.auth_lockouts.inc()
            return
        label = pairing_event_label(event_type, data)
        if label is not None:
            self.pairing_events.labels(event=label).inc()

    def set_pairing_state(self, pending: int, devices_by_role: Mapping[str, int]) -> None:
        self.pending.set(pending)
        for role in ROLES:
            self.devices.labels(role=role).set(devices_by_role.get(role, 0))

    def proxy_outcome(self, outcome: str) -> None:
        """Count one resolved request's proxy-header outcome (on the event loop)."""
        if self._batching and outcome in self._outcomes:
            self._outcomes[outcome] += 1
            return
        count = self._proxy_outcome_counts.get(outcome)
        if count is None:
            count = self.proxy_headers.labels(outcome=outcome)
        count.inc()

    def peer_lookup(self, owner: str) -> None:
        self.peer_lookups.labels(owner=owner if owner in PEER_OWNERS else "unknown").inc()

    def upstream(self, name: str, status: int | None, seconds: float) -> None:
        self.upstream_requests.labels(upstream=name, code_class=code_class(status)).inc()
        self.upstream_duration.labels(upstream=name).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text; aggregated over all workers in multiprocess mode."""
        return render_exposition(self.registry)


def render_exposition(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The exposition of ``registry``, or of every worker's files in multiprocess mode.

    Without a registry (the dedicated metrics listener of ``edge serve``, which
    runs in no worker) multiprocess mode is required.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        with contextlib.suppress(OSError):
            forget_dead_workers(Path(directory))
        aggregated = CollectorRegistry()
        _multiprocess.MultiProcessCollector(aggregated, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(aggregated), CONTENT_TYPE
    if registry is None:
        raise RuntimeError(f"no registry to render and {MULTIPROC_ENV} is not set")
    return generate_latest(registry), CONTENT_TYPE
