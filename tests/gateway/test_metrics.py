"""Metrics in one process: every counter moves by exactly what the traffic explains.

Each test reads the exposition (``Metrics.render``, parsed with
``text_string_to_metric_families``) before and after its traffic and compares
every changed series with the expected change, so a counter that moves twice,
or one that moves when it should not, fails the test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.websockets import WebSocketDisconnect

import edge.gateway.runtime as runtime
from edge import __version__, create_app
from edge.heads import REASONS as HEAD_REFUSALS
from edge.metrics import (
    AUTH_FAILURE_REASONS,
    CODE_CLASSES,
    PAIRING_EVENTS,
    PEER_OWNERS,
    PROXY_OUTCOMES,
    Metrics,
    code_class,
    forget_dead_workers,
    pairing_event_label,
)
from edge.pairing.store.claims import EventClaim
from edge.refusals import Denial
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, base_config, client_for, logged

LOCAL_URL = "http://localhost:18789"
Key = tuple[str, frozenset[tuple[str, str]]]

METRIC_NAMES = {
    "edge_requests",
    "edge_request_duration_seconds",
    "edge_auth_failures",
    "edge_auth_lockouts",
    "edge_pairing_events",
    "edge_pairing_requests_pending",
    "edge_devices_paired",
    "edge_websocket_connections",
    "edge_proxy_headers",
    "edge_request_heads_refused",
    "edge_upstream_requests",
    "edge_upstream_duration_seconds",
    "edge_build_info",
    "edge_store_up",
    "edge_peer_lookups",
}
# Label values a dashboard may rely on; anything else in the exposition is a leak.
BOUNDED_LABELS: dict[str, set[str]] = {
    "kind": {"http", "websocket"},
    "decision": {"local", "paired", "denied", "public"},
    "reason": set(AUTH_FAILURE_REASONS) | set(HEAD_REFUSALS),
    "event": set(PAIRING_EVENTS),
    "role": {"admin", "user"},
    "outcome": set(PROXY_OUTCOMES),
    "owner": set(PEER_OWNERS),
    "code_class": set(CODE_CLASSES),
    "version": {__version__, platform.python_version()},
    # python_info and python_gc_*: this interpreter's, fixed for the process's life.
    "implementation": {platform.python_implementation()},
    "major": {platform.python_version_tuple()[0]},
    "minor": {platform.python_version_tuple()[1]},
    "patchlevel": {platform.python_version_tuple()[2]},
    "generation": {"0", "1", "2"},
}


class Exposition:
    """A parsed exposition: ``value(name, **labels)`` and ``changes_since(earlier)``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[Key, float] = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def changes_since(self, earlier: Exposition) -> dict[str, float]:
        """Every series that changed, as ``name{k=v,...}`` -> difference (timings left out)."""
        changed = {}
        for key in self.samples.keys() | earlier.samples.keys():
            name, labels = key
            if name.endswith(("_bucket", "_sum")):
                continue  # depend on how long things took
            difference = self.samples.get(key, 0.0) - earlier.samples.get(key, 0.0)
            if difference:
                rendered = ",".join(f"{k}={v}" for k, v in sorted(labels))
                changed[f"{name}{{{rendered}}}"] = difference
        return changed


def exposition(app: Any) -> Exposition:
    data, _ = app.state.gateway.metrics.render()
    return Exposition(data.decode())


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for the event watcher (a background thread) to have done its part."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def pairing_request(app: Any, device: Device, role: str = "user") -> str:
    """A remote device asks with the gateway token; returns the request id."""
    with client_for(app, REMOTE).websocket_connect("/ws") as ws:
        reply = device.handshake(ws, {"token": GATEWAY_TOKEN}, role=role)
    assert reply["code"] == "PAIRING_REQUIRED"
    return str(reply["requestId"])


@pytest.fixture
def quiet_housekeeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """No 5-second sweep: gauges that move must have moved because of the event itself."""
    monkeypatch.setattr(runtime, "SWEEP_INTERVAL", 3600.0)


def make_app(tmp_path: Path, **overrides: Any) -> Any:
    return create_app(base_config(tmp_path, **overrides))


# -- the exposition ------------------------------------------------------------------------------


def test_every_metric_and_bounded_series_exists_before_any_traffic(tmp_path: Path) -> None:
    metrics = exposition(make_app(tmp_path))
    assert set(metrics.families) == METRIC_NAMES
    assert metrics.families["edge_requests"].type == "counter"
    assert metrics.families["edge_request_duration_seconds"].type == "histogram"
    assert metrics.families["edge_websocket_connections"].type == "gauge"
    assert metrics.value("edge_build_info", version=__version__) == 1
    for reason in AUTH_FAILURE_REASONS:
        assert ("edge_auth_failures_total", frozenset({("reason", reason)})) in metrics.samples
    for outcome in PROXY_OUTCOMES:
        assert ("edge_proxy_headers_total", frozenset({("outcome", outcome)})) in metrics.samples
    for event in PAIRING_EVENTS:
        assert ("edge_pairing_events_total", frozenset({("event", event)})) in metrics.samples
    for reason in HEAD_REFUSALS:
        key = ("edge_request_heads_refused_total", frozenset({("reason", reason)}))
        assert key in metrics.samples
    for decision in ("local", "paired", "denied", "public"):
        key = ("edge_requests_total", frozenset({("kind", "http"), ("decision", decision)}))
        assert key in metrics.samples
    assert "edge_requests_created" not in metrics.text


def test_auth_failure_reasons_are_the_denials_metric_labels() -> None:
    assert set(AUTH_FAILURE_REASONS) == {d.metric_label for d in Denial}
    assert all(label.isidentifier() and label.islower() for label in AUTH_FAILURE_REASONS)


# -- HTTP ------------------------------------------------------------------------------------------


def test_http_decisions_and_failure_reasons_move_by_exactly_one_each(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    remote = client_for(app, REMOTE)
    with client_for(app, LOOPBACK, LOCAL_URL) as local:
        before = exposition(app)
        assert local.get("/api/devices").status_code == 200
        assert remote.get("/healthz").status_code == 200
        assert remote.get("/api/devices").status_code == 401
        bad = {"authorization": "Bearer not-a-device-token"}
        assert remote.get("/api/devices", headers=bad).status_code == 401
        # A refused credential on a public route is answered, and still counted as a failure.
        assert remote.get("/api/whoami", headers=bad).status_code == 200
        after = exposition(app)
    assert after.changes_since(before) == {
        "edge_requests_total{decision=local,kind=http}": 1,
        "edge_requests_total{decision=public,kind=http}": 2,
        "edge_requests_total{decision=denied,kind=http}": 2,
        "edge_request_duration_seconds_count{kind=http}": 5,
        "edge_auth_failures_total{reason=credentials_missing}": 1,
        "edge_auth_failures_total{reason=device_token_invalid}": 2,
        "edge_proxy_headers_total{outcome=none}": 5,
    }


def test_paired_device_and_forbidden_role_are_counted(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    device = Device("phone")
    with client_for(app, REMOTE) as remote:
        request_id = pairing_request(app, device)
        app.state.gateway.service.approve(request_id, actor="test")
        with remote.websocket_connect("/ws") as ws:
            token = device.handshake(ws, {"token": GATEWAY_TOKEN})["deviceToken"]
        # The event watcher counts the pairing in the background: let it land before
        # the snapshot, so the diff holds only the two requests.
        eventually(
            lambda: (
                exposition(app).value("edge_pairing_events_total", event="approved") == 1
                and exposition(app).value("edge_devices_paired", role="user") == 1
            ),
            "the pairing counted",
        )
        before = exposition(app)
        bearer = {"authorization": f"Bearer {token}"}
        assert remote.get("/api/whoami", headers=bearer).json()["auth"]["state"] == "paired"
        assert remote.get("/api/devices", headers=bearer).status_code == 403
        after = exposition(app)
    assert after.changes_since(before) == {
        "edge_requests_total{decision=paired,kind=http}": 1,
        "edge_requests_total{decision=denied,kind=http}": 1,
        "edge_request_duration_seconds_count{kind=http}": 2,
        "edge_auth_failures_total{reason=role_forbidden}": 1,
        "edge_proxy_headers_total{outcome=none}": 2,
    }


def test_lockout_is_counted_once_and_later_attempts_as_rate_limited(tmp_path: Path) -> None:
    app = make_app(tmp_path, auth={"rate_limit": {"failures": 3, "window": 60, "lockout": 300}})
    bad = {"authorization": "Bearer wrong-token"}
    with client_for(app, REMOTE) as remote:
        before = exposition(app)
        reasons = [remote.get("/api/devices", headers=bad).json()["reason"] for _ in range(5)]
        eventually(
            lambda: exposition(app).value("edge_auth_lockouts_total") == 1, "lockout counted"
        )
        after = exposition(app)
    first_locked = reasons.index("rate_limited")
    assert reasons == ["device_token_invalid"] * first_locked + ["rate_limited"] * (
        5 - first_locked
    )
    assert after.changes_since(before) == {
        "edge_requests_total{decision=denied,kind=http}": 5,
        "edge_request_duration_seconds_count{kind=http}": 5,
        "edge_auth_failures_total{reason=device_token_invalid}": first_locked,
        "edge_auth_failures_total{reason=rate_limited}": 5 - first_locked,
        "edge_auth_lockouts_total{}": 1,
        "edge_proxy_headers_total{outcome=none}": 5,
    }


def test_proxy_header_outcomes_are_counted_per_request(tmp_path: Path) -> None:
    app = make_app(tmp_path, proxy={"trusted_proxies": ["203.0.113.0/24"]})
    untrusted = client_for(app, ("198.51.100.9", 5000))
    with client_for(app, REMOTE) as through_proxy:
        before = exposition(app)
        through_proxy.get("/healthz", headers={"x-forwarded-for": "198.51.100.4"})
        through_proxy.get("/healthz", headers={"x-forwarded-for": "unknown"})
        through_proxy.get("/healthz", headers={"x-forwarded-for": ", ".join(["203.0.113.1"] * 70)})
        through_proxy.get("/healthz")
        untrusted.get("/healthz", headers={"x-forwarded-for": "127.0.0.1"})
        untrusted.get("/healthz", headers={"x-real-ip": "10.0.0.1"})
        after = exposition(app)
    assert after.changes_since(before) == {
        "edge_proxy_headers_total{outcome=trusted}": 1,
        "edge_proxy_headers_total{outcome=malformed_forwarded}": 1,
        "edge_proxy_headers_total{outcome=too_many_hops}": 1,
        "edge_proxy_headers_total{outcome=none}": 1,
        "edge_proxy_headers_total{outcome=untrusted_proxy_headers}": 2,
        "edge_requests_total{decision=public,kind=http}": 6,
        "edge_request_duration_seconds_count{kind=http}": 6,
    }


# -- WebSocket -------------------------------------------------------------------------------------


def _refused(app: Any, device: Device, auth: dict[str, str] | None, **headers: str) -> int:
    """A remote handshake that must end in a 1008 close; returns the close code."""
    with (
        client_for(app, REMOTE).websocket_connect("/ws", headers=headers) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        if auth is None:
            ws.receive_json()
            ws.send_text("not json")
            ws.receive_json()
        else:
            device.handshake(ws, auth)
    return closed.value.code


def test_websocket_decisions_reasons_and_the_connection_gauge(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    admin, stranger = Device("admin"), Device("stranger")
    with client_for(app, LOOPBACK, LOCAL_URL) as local:
        before = exposition(app)
        with local.websocket_connect("/ws", headers={"host": "localhost:18789"}) as ws:
            assert admin.handshake(ws, {})["type"] == "hello"
            assert exposition(app).value("edge_websocket_connections") == 1
        eventually(lambda: exposition(app).value("edge_websocket_connections") == 0, "socket gone")
        assert _refused(app, stranger, {}, origin="https://evil.example") == 1008
        assert _refused(app, stranger, None) == 1008
        assert _refused(app, stranger, {}) == 1008
        assert _refused(app, stranger, {"token": "wrong-gateway-token-0123456789"}) == 1008
        eventually(
            lambda: exposition(app).value("edge_devices_paired", role="admin") == 1, "admin counted"
        )
        after = exposition(app)
    changes = after.changes_since(before)
    assert changes == {
        "edge_requests_total{decision=local,kind=websocket}": 1,
        "edge_requests_total{decision=denied,kind=websocket}": 4,
        "edge_request_duration_seconds_count{kind=websocket}": 5,
        "edge_auth_failures_total{reason=origin_not_allowed}": 1,
        "edge_auth_failures_total{reason=invalid_handshake}": 1,
        "edge_auth_failures_total{reason=gateway_token_missing}": 1,
        "edge_auth_failures_total{reason=gateway_token_mismatch}": 1,
        "edge_devices_paired{role=admin}": 1,
        "edge_proxy_headers_total{outcome=none}": 5,
    }


# -- pairing events and the store-derived gauges ---------------------------------------------------


def test_pairing_lifecycle_counts_each_event_once_and_gauges_follow_at_once(
    tmp_path: Path, quiet_housekeeping: None
) -> None:
    app = make_app(tmp_path)
    gateway = app.state.gateway
    accepted, refused = Device("accepted"), Device("refused")

    def value(name: str, **labels: str) -> float:
        return exposition(app).value(name, **labels)

    def pending_is(count: int) -> None:
        eventually(lambda: value("edge_pairing_requests_pending") == count, f"{count} pending")

    with client_for(app, LOOPBACK, LOCAL_URL):
        before = exposition(app)
        first = pairing_request(app, accepted)
        pending_is(1)
        assert pairing_request(app, accepted) == first  # the same request, refreshed: not new
        second = pairing_request(app, refused)
        pending_is(2)
        gateway.service.approve(first, actor="cli")
        eventually(lambda: value("edge_devices_paired", role="user") == 1, "user device counted")
        pending_is(1)
        gateway.service.reject(second, actor="cli")
        pending_is(0)
        with client_for(app, REMOTE).websocket_connect("/ws") as ws:
            assert accepted.handshake(ws, {"token": GATEWAY_TOKEN})["type"] == "hello"
        gateway.service.rotate_token(accepted.id, actor="cli")
        gateway.service.revoke(accepted.id, actor="cli")
        eventually(lambda: value("edge_devices_paired", role="user") == 0, "revocation counted")
        eventually(
            lambda: value("edge_pairing_events_total", event="rotated") == 1, "rotation counted"
        )
        after = exposition(app)
    assert after.changes_since(before) == {
        "edge_pairing_events_total{event=requested}": 2,
        "edge_pairing_events_total{event=approved}": 1,
        "edge_pairing_events_total{event=rejected}": 1,
        "edge_pairing_events_total{event=rotated}": 1,
        "edge_pairing_events_total{event=revoked}": 1,
        # three refused handshakes (pairing required) and one paired hello, all remote
        "edge_requests_total{decision=denied,kind=websocket}": 3,
        "edge_requests_total{decision=paired,kind=websocket}": 1,
        "edge_request_duration_seconds_count{kind=websocket}": 4,
        "edge_auth_failures_total{reason=pairing_required}": 3,
        "edge_proxy_headers_total{outcome=none}": 4,
    }


def test_expired_requests_are_counted_and_leave_the_pending_gauge(
    tmp_path: Path, quiet_housekeeping: None
) -> None:
    ttl = 1.0
    app = make_app(tmp_path, pairing={"request_ttl": ttl})
    with client_for(app, LOOPBACK, LOCAL_URL):
        before = exposition(app)
        pairing_request(app, Device("slow"))
        asked = time.time()
        eventually(lambda: time.time() > asked + ttl, "request past its expiry")
        app.state.gateway.service.sweep()
        eventually(
            lambda: exposition(app).value("edge_pairing_events_total", event="expired") == 1,
            "expiry counted",
        )
        after = exposition(app)
    assert after.value("edge_pairing_requests_pending") == 0
    assert after.changes_since(before) == {
        "edge_pairing_events_total{event=requested}": 1,
        "edge_pairing_events_total{event=expired}": 1,
        "edge_requests_total{decision=denied,kind=websocket}": 1,
        "edge_request_duration_seconds_count{kind=websocket}": 1,
        "edge_auth_failures_total{reason=pairing_required}": 1,
        "edge_proxy_headers_total{outcome=none}": 1,
    }


def test_pairing_event_labels_skip_refreshes_and_reconnect_tokens() -> None:
    assert pairing_event_label("pairing.requested", {}) == "requested"
    assert pairing_event_label("pairing.requested", {"refreshed": True}) is None
    for decision in ("approved", "rejected", "expired"):
        assert pairing_event_label("pairing.resolved", {"decision": decision}) == decision
    assert pairing_event_label("pairing.resolved", {"decision": "bogus"}) is None
    assert pairing_event_label("device.token_rotated", {"reason": "rotate"}) == "rotated"
    assert pairing_event_label("device.token_rotated", {"reason": "reconnect"}) is None
    assert pairing_event_label("device.token_rotated", {"reason": "issued"}) is None
    assert pairing_event_label("device.revoked", {}) == "revoked"
    assert pairing_event_label("device.expired", {}) == "expired"
    assert pairing_event_label("device.renamed", {}) is None
    assert pairing_event_label("auth.lockout", {}) is None


# -- counting each store event once over several processes --------------------------------------


def test_event_claim_without_a_file_owns_everything() -> None:
    assert EventClaim(None).claim([3, 1, 2]) == {1, 2, 3}


def test_event_claim_gives_each_seq_to_the_first_claimer_only(tmp_path: Path) -> None:
    path = tmp_path / "claim"
    first, second = EventClaim(path), EventClaim(path)
    assert first.claim(range(1, 4)) == {1, 2, 3}
    assert second.claim(range(1, 6)) == {4, 5}
    assert first.claim(range(4, 6)) == set()


def test_event_claim_lets_a_late_starter_keep_out_of_older_events(tmp_path: Path) -> None:
    path = tmp_path / "claim"
    old, late = EventClaim(path), EventClaim(path)
    assert old.claim([10, 11]) == {10, 11}
    assert late.claim([20, 21]) == {20, 21}  # started after 19; 12-19 still belong to someone
    assert old.claim(range(12, 22)) == set(range(12, 20))


def test_event_claim_keeps_a_bounded_file(tmp_path: Path) -> None:
    path = tmp_path / "claim"
    claim = EventClaim(path, max_ranges=4)
    for seq in range(2, 40, 2):  # every other seq: a new range each time
        claim.claim([seq])
    stored = json.loads(path.read_text())
    assert len(stored["ranges"]) <= 4
    assert claim.claim([3]) == set()  # below the floor: given up, never counted twice


def test_event_claim_resets_a_damaged_file_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "claim"
    path.write_text("{not json")
    with logged("edge.store") as log:
        assert EventClaim(path).claim([1, 2]) == {1, 2}
    assert any("was damaged, reset" in message for message in log.messages)
    assert EventClaim(path).claim([1, 2, 3]) == {3}


def test_event_claim_without_a_usable_file_counts_locally(tmp_path: Path) -> None:
    with logged("edge.store") as log:
        assert EventClaim(tmp_path / "missing" / "claim").claim([1, 2]) == {1, 2}
    assert any("unusable, counting locally" in message for message in log.messages)


def _claim_in_process(path: str, seqs: list[int], results: Any) -> None:
    results.put(sorted(EventClaim(Path(path)).claim(seqs)))


def test_event_claim_across_processes_gives_every_seq_to_exactly_one(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    batches = [list(range(start, start + 40)) for start in (1, 11, 21, 1, 31)]
    processes = [
        context.Process(target=_claim_in_process, args=(str(tmp_path / "claim"), batch, results))
        for batch in batches
    ]
    for process in processes:
        process.start()
    owned = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    flat = [seq for part in owned for seq in part]
    assert sorted(flat) == list(range(1, 71))


# -- multiprocess bookkeeping ----------------------------------------------------------------------


def test_dead_workers_live_gauges_are_dropped(tmp_path: Path) -> None:
    dead_pid = _a_pid_that_is_gone()
    (tmp_path / f"gauge_livesum_{dead_pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"")
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    assert forget_dead_workers(tmp_path) == [dead_pid]
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == sorted([f"counter_{dead_pid}.db", f"gauge_livesum_{os.getpid()}.db"])


def _a_pid_that_is_gone() -> int:
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=int)
    process.start()
    process.join()
    assert process.pid is not None
    return process.pid


def test_code_classes() -> None:
    assert [code_class(s) for s in (200, 204, 301, 404, 502, None, 0, 700)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "error",
        "error",
        "error",
    ]
    assert code_class(101) == "2xx"  # a WebSocket upgrade the upstream accepted


def test_metrics_instances_do_not_share_a_registry() -> None:
    first, second = Metrics("1"), Metrics("2")
    first.auth_failure("rate_limited")
    sample = second.registry.get_sample_value
    assert sample("edge_auth_failures_total", {"reason": "rate_limited"}) == 0
    assert (
        first.registry.get_sample_value("edge_auth_failures_total", {"reason": "rate_limited"}) == 1
    )


# -- /metrics access -------------------------------------------------------------------------------


def test_local_clients_read_metrics(tmp_path: Path) -> None:
    with client_for(make_app(tmp_path), LOOPBACK, LOCAL_URL) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "edge_build_info" in response.text


def test_remote_clients_are_refused_without_network_or_token(tmp_path: Path) -> None:
    app = make_app(tmp_path, metrics={"bearer_token": "scrape-token-0123456789"})
    with client_for(app, REMOTE) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"authorization": "Bearer scrape-token-wrong-0000"})
        device_token_is_not_enough = client.get("/metrics", headers={"authorization": "Bearer x"})
    for response in (missing, wrong, device_token_is_not_enough):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "edge_" not in response.text


def test_wrong_metrics_tokens_are_counted_and_lock_the_address_out(tmp_path: Path) -> None:
    token = "scrape-token-0123456789"
    app = make_app(
        tmp_path,
        metrics={"bearer_token": token},
        auth={"token": GATEWAY_TOKEN, "rate_limit": {"failures": 3, "window": 60, "lockout": 300}},
    )
    right = {"authorization": f"Bearer {token}"}
    with client_for(app, REMOTE) as client:
        for guess in range(3):
            wrong = client.get("/metrics", headers={"authorization": f"Bearer guess-{guess}"})
            assert wrong.status_code == 401 and wrong.json()["reason"] == "metrics_forbidden"
        locked = client.get("/metrics", headers=right)  # the right token, too late
    assert locked.status_code == 401
    assert locked.json()["reason"] == "rate_limited"
    assert int(locked.headers["retry-after"]) > 0
    # The lockout is per address: another scraper with the token still reads.
    assert client_for(app, ("198.51.100.9", 1)).get("/metrics", headers=right).status_code == 200
    # No token at all is no guess, nor is a browser's session cookie: refused, not counted.
    other = ("198.51.100.10", 1)
    for _ in range(5):
        assert client_for(app, other).get("/metrics").status_code == 401
        session = {"cookie": "edge_session=a-device-token-of-some-browser"}
        assert client_for(app, other).get("/metrics", headers=session).status_code == 401
    assert client_for(app, other).get("/metrics", headers=right).status_code == 200
    metrics = exposition(app)
    assert metrics.value("edge_auth_failures_total", reason="metrics_token_mismatch") == 3
    assert metrics.value("edge_auth_failures_total", reason="rate_limited") == 1


def test_allowed_networks_read_metrics_and_others_do_not(tmp_path: Path) -> None:
    app = make_app(tmp_path, metrics={"allowed_networks": ["203.0.113.0/24", "2001:db8::/32"]})
    assert client_for(app, REMOTE).get("/metrics").status_code == 200
    assert client_for(app, ("2001:db8::5", 1)).get("/metrics").status_code == 200
    assert client_for(app, ("198.51.100.1", 1)).get("/metrics").status_code == 401


def test_bearer_token_reads_metrics(tmp_path: Path) -> None:
    app = make_app(tmp_path, metrics={"bearer_token": "scrape-token-0123456789"})
    with client_for(app, REMOTE) as client:
        response = client.get(
            "/metrics", headers={"authorization": "Bearer scrape-token-0123456789"}
        )
    assert response.status_code == 200
    assert "edge_requests_total" in response.text


def test_the_dedicated_listener_applies_the_same_rules_to_every_workers_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import values
    from starlette.testclient import TestClient

    from edge.config import load_settings
    from edge.gateway.metrics_endpoint import listener_app
    from edge.metrics import MULTIPROC_ENV, Metrics, prepare_multiprocess_dir

    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored afterwards
    monkeypatch.setenv(MULTIPROC_ENV, "")  # and the variable with it
    prepare_multiprocess_dir(tmp_path / "metrics")  # as edge serve does for the listener
    worker = Metrics(__version__)  # a worker's metrics, written to the shared directory
    worker.observe_request("http", "paired", 0.01)
    settings = load_settings(
        base_config(
            tmp_path,
            metrics={
                "port": 9464,
                "allowed_networks": ["10.1.0.0/16"],
                "bearer_token": "scrape-token-0123456789",
            },
            proxy={"trusted_proxies": [REMOTE[0]]},  # trusted by the gateway, not by the listener
        ),
        environ={},
    )
    app = listener_app(settings)

    def get(client: tuple[str, int], headers: dict[str, str] | None = None) -> Any:
        with TestClient(app, client=client, base_url="http://127.0.0.1:9464") as http:
            return http.get("/metrics", headers=headers or {})

    refused = get(REMOTE)
    assert refused.status_code == 401 and refused.json()["reason"] == "metrics_forbidden"
    assert refused.headers["www-authenticate"] == 'Bearer realm="edge-metrics"'
    # A peer the gateway trusts as its proxy cannot name an allowed client here.
    assert get(REMOTE, {"x-forwarded-for": "10.1.7.7"}).status_code == 401
    assert get(REMOTE, {"x-forwarded-for": "127.0.0.1"}).status_code == 401
    for allowed in (
        get(LOOPBACK),
        get(("10.1.7.7", 1)),
        get(REMOTE, {"authorization": "Bearer scrape-token-0123456789"}),
    ):
        assert allowed.status_code == 200
        assert (
            Exposition(allowed.text).value("edge_requests_total", kind="http", decision="paired")
            == 1
        )


def test_with_a_listener_of_its_own_the_gateway_port_serves_no_metrics(tmp_path: Path) -> None:
    app = make_app(tmp_path, metrics={"port": 9464})
    with client_for(app, LOOPBACK, LOCAL_URL) as local:
        assert local.get("/metrics").status_code == 404
    assert client_for(app, REMOTE).get("/metrics").status_code == 401  # a protected unknown path


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        ({"port": 18789}, "metrics.port: 18789 is also server.port"),
        ({"port": 0}, "metrics.port"),
        ({"port": 9464, "host": "not a host"}, "metrics.host: 'not a host' is not an IP address"),
    ],
)
def test_a_bad_metrics_listener_is_a_config_error(
    tmp_path: Path, metrics: dict[str, Any], problem: str
) -> None:
    from edge.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings(base_config(tmp_path, metrics=metrics), environ={})
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_forged_loopback_address_from_an_untrusted_peer_is_refused(tmp_path: Path) -> None:
    app = make_app(tmp_path, metrics={"allowed_networks": ["127.0.0.0/8"]})
    with client_for(app, REMOTE) as client:
        response = client.get("/metrics", headers={"x-forwarded-for": "127.0.0.1"})
    assert response.status_code == 401


def test_a_client_behind_a_trusted_proxy_is_judged_by_its_own_address(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        proxy={"trusted_proxies": ["127.0.0.1"]},
        metrics={"allowed_networks": ["10.0.0.0/8"]},
    )
    with client_for(app, LOOPBACK, LOCAL_URL) as proxy:
        assert proxy.get("/metrics", headers={"x-forwarded-for": "10.1.2.3"}).status_code == 200
        assert proxy.get("/metrics", headers={"x-forwarded-for": "198.51.100.3"}).status_code == 401


def test_metrics_path_and_switch_are_honoured(tmp_path: Path) -> None:
    moved = make_app(tmp_path / "a", metrics={"path": "/internal/metrics"})
    with client_for(moved, LOOPBACK, LOCAL_URL) as client:
        assert client.get("/internal/metrics").status_code == 200
        assert client.get("/metrics").status_code == 404
    disabled = make_app(tmp_path / "b", metrics={"enabled": False})
    with client_for(disabled, LOOPBACK, LOCAL_URL) as client:
        assert client.get("/metrics").status_code == 404


def test_scrapes_are_not_counted_as_requests(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with client_for(app, LOOPBACK, LOCAL_URL) as client:
        before = exposition(app)
        client.get("/metrics")
        client.get("/metrics")
        after = exposition(app)
    assert after.changes_since(before) == {"edge_proxy_headers_total{outcome=none}": 2}


# -- upstreams -------------------------------------------------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 500 if self.path.endswith("/fail") else 200
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def upstream_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_upstream_requests_are_counted_by_configured_name_and_class(
    tmp_path: Path, upstream_port: int
) -> None:
    from tests.integration.conftest import free_port

    app = make_app(
        tmp_path,
        upstreams=[
            {
                "prefix": "/app/",
                "share_control_origin": True,
                "url": f"http://127.0.0.1:{upstream_port}",
                "name": "app",
            },
            {
                "prefix": "/gone/",
                "share_control_origin": True,
                "url": f"http://127.0.0.1:{free_port()}",
                "connect_timeout": 2,
            },
        ],
    )
    with client_for(app, LOOPBACK, LOCAL_URL) as client:
        before = exposition(app)
        assert client.get("/app/one").status_code == 200
        assert client.get("/app/two?token=secret").status_code == 200
        assert client.get("/app/x/fail").status_code == 500
        assert client.get("/gone/anything").status_code == 502
        after = exposition(app)
    changes = after.changes_since(before)
    assert {k: v for k, v in changes.items() if k.startswith("edge_upstream")} == {
        "edge_upstream_requests_total{code_class=2xx,upstream=app}": 2,
        "edge_upstream_requests_total{code_class=5xx,upstream=app}": 1,
        "edge_upstream_requests_total{code_class=5xx,upstream=gone}": 1,
        "edge_upstream_duration_seconds_count{upstream=app}": 3,
        "edge_upstream_duration_seconds_count{upstream=gone}": 1,
    }
    assert changes["edge_requests_total{decision=local,kind=http}"] == 4


# -- label hygiene ---------------------------------------------------------------------------------


def test_no_label_holds_a_path_address_device_id_or_token(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        proxy={"trusted_proxies": ["203.0.113.0/24"]},
        metrics={"bearer_token": "scrape-token-0123456789"},
    )
    device = Device("laptop")
    with client_for(app, REMOTE) as remote:
        request_id = pairing_request(app, device)
        app.state.gateway.service.approve(request_id, actor="cli")
        with remote.websocket_connect("/ws") as ws:
            token = device.handshake(ws, {"token": GATEWAY_TOKEN})["deviceToken"]
        for path in ("/api/devices", f"/api/devices/{device.id}/revoke", "/nowhere/at/all"):
            remote.get(path, headers={"x-forwarded-for": "198.51.100.77"})
        remote.get("/api/whoami", headers={"authorization": f"Bearer {token}"})
        remote.get("/api/whoami", headers={"authorization": "Bearer guess-0123456789"})
        text = remote.get(
            "/metrics", headers={"authorization": "Bearer scrape-token-0123456789"}
        ).text
    parsed = Exposition(text)
    for _, labels in parsed.samples:
        for name, value in labels:
            if name == "le":
                continue
            assert value in BOUNDED_LABELS[name], f"unbounded label {name}={value!r}"
    for secret in ("203.0.113", "198.51.100", device.id[:12], token, GATEWAY_TOKEN, "/api/"):
        assert secret not in text


def test_a_device_pairing_by_invite_moves_invited_by_one_and_counts_the_device(
    tmp_path: Path, quiet_housekeeping: None
) -> None:
    app = make_app(tmp_path)
    newcomer = Device("kiosk")
    with client_for(app, LOOPBACK, LOCAL_URL) as local:
        code = local.post("/api/invites", json={"role": "user"}).json()["code"]
        before = exposition(app)
        with client_for(app, REMOTE).websocket_connect("/ws") as ws:
            assert newcomer.handshake(ws, {"invite": code})["type"] == "hello"
        eventually(
            lambda: exposition(app).value("edge_pairing_events_total", event="invited") == 1,
            "invite use counted",
        )
        eventually(
            lambda: exposition(app).value("edge_devices_paired", role="user") == 1,
            "invited device counted",
        )
        after = exposition(app)
    changes = after.changes_since(before)
    assert changes["edge_pairing_events_total{event=invited}"] == 1
    assert changes["edge_devices_paired{role=user}"] == 1
    assert changes["edge_requests_total{decision=paired,kind=websocket}"] == 1
    assert not any(key.startswith("edge_auth_failures_total") for key in changes)
    assert not any(
        key.startswith("edge_pairing_events_total") and "invited" not in key for key in changes
    )


def test_an_invite_use_is_counted_as_invited() -> None:
    from edge.metrics import pairing_event_label

    assert pairing_event_label("invite.used", {"invite_id": "abc"}) == "invited"
    assert pairing_event_label("invite.created", {}) is None
