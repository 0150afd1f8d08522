"""Prometheus metrics: every decision the gateway makes is countable here.

Labels are bounded by construction: kinds, decisions, reasons and outcomes
are closed sets, upstream labels are configured names. No label ever holds a
path, an address, a device id or a token.

With several uvicorn workers, ``prepare_multiprocess_dir`` must run in the
parent before the workers start (``edge serve`` does it); each worker then
writes its own files and ``render`` aggregates them. Gauges state how they
aggregate: live sockets add up over live workers; store-derived gauges (every
worker reads the same store) take the newest value.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

# `_created` series double the exposition and no dashboard here uses them.
disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
KINDS = ("http", "websocket")
DECISIONS = ("local", "paired", "denied")
PROXY_OUTCOMES = ("none", "trusted", "untrusted_proxy_headers", "malformed_forwarded", "too_many_hops")
PAIRING_EVENTS = ("requested", "approved", "rejected", "expired", "revoked", "rotated")
ROLES = ("admin", "user")
CODE_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")

# Store event type -> edge_pairing_events_total{event}
_EVENT_LABELS = {
    "pairing.requested": "requested",
    "device.revoked": "revoked",
    "device.token_rotated": "rotated",
    "device.expired": "expired",
}
_DECISION_LABELS = {"approved": "approved", "rejected": "rejected", "expired": "expired"}


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir(path: Path) -> None:
    """Create (or wipe) the directory workers share, and point this process tree at it."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (uvicorn's supervisor calls this via a hook)."""
    if multiprocess_enabled():
        _multiprocess.mark_process_dead(pid)


def pairing_event_label(event_type: str, data: Mapping[str, object]) -> str | None:
    """The ``event`` label for a store event, or None when it is not a pairing event."""
    if event_type == "pairing.resolved":
        return _DECISION_LABELS.get(str(data.get("decision")))
    return _EVENT_LABELS.get(event_type)


def code_class(status: int | None) -> str:
    if status is None or not 100 <= status <= 599:
        return "error"
    return f"{status // 100}xx" if status >= 200 else "2xx"


class Metrics:
    """The gateway's metrics, registered in their own registry (one per app)."""

    def __init__(self, version: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "edge_requests", "Requests by kind and decision.", ["kind", "decision"], registry=r
        )
        self.request_duration = Histogram(
            "edge_request_duration_seconds",
            "Time to answer an HTTP request or complete a WebSocket handshake.",
            ["kind"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.auth_failures = Counter(
            "edge_auth_failures", "Refused authentications by reason.", ["reason"], registry=r
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
        self.build_info = Gauge(
            "edge_build_info",
            "Edge build information; always 1.",
            ["version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.build_info.labels(version=version).set(1)
        for kind in KINDS:
            self.request_duration.labels(kind=kind)
            for decision in DECISIONS:
                self.requests.labels(kind=kind, decision=decision)
        for outcome in PROXY_OUTCOMES:
            self.proxy_headers.labels(outcome=outcome)
        for event in PAIRING_EVENTS:
            self.pairing_events.labels(event=event)
        for role in ROLES:
            self.devices.labels(role=role)

    def observe_request(self, kind: str, decision: str, seconds: float) -> None:
        self.requests.labels(kind=kind, decision=decision).inc()
        self.request_duration.labels(kind=kind).observe(seconds)

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason=reason).inc()

    def pairing_event(self, event_type: str, data: Mapping[str, object]) -> None:
        label = pairing_event_label(event_type, data)
        if label is not None:
            self.pairing_events.labels(event=label).inc()

    def set_pairing_state(self, pending: int, devices_by_role: Mapping[str, int]) -> None:
        self.pending.set(pending)
        for role in ROLES:
            self.devices.labels(role=role).set(devices_by_role.get(role, 0))

    def proxy_outcome(self, outcome: str) -> None:
        self.proxy_headers.labels(outcome=outcome).inc()

    def upstream(self, name: str, status: int | None, seconds: float) -> None:
        self.upstream_requests.labels(upstream=name, code_class=code_class(status)).inc()
        self.upstream_duration.labels(upstream=name).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text; aggregated over all workers in multiprocess mode."""
        if multiprocess_enabled():
            registry = CollectorRegistry()
            _multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
