"""Per-request counts kept in plain integers: the exposition's totals are exactly what they were.

With one worker ``Metrics`` counts each request, its duration and its
proxy-header outcome in integers and hands them to prometheus-client whenever
its registry is read; with several workers (the multiprocess files) each
request is written at once. These tests hold the totals to exact counts:
against prometheus-client's own histogram for the same observations, across
reads in between, and summed over two worker processes writing the shared
multiprocess directory.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from edge import __version__
from edge.metrics import (
    MULTIPROC_ENV,
    REQUEST_BUCKETS,
    Metrics,
    prepare_multiprocess_dir,
    render_exposition,
)
from tests.conftest import REMOTE, base_config, client_for

DURATIONS = [0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.02, 0.02, 0.3, 4.0, 11.0, 60.0, 0.0]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counts_and_buckets_equal_prometheus_clients_own_for_the_same_requests() -> None:
    metrics = Metrics(__version__)
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "reference", "the same observations", registry=reference_registry, buckets=REQUEST_BUCKETS
    )
    for seconds in DURATIONS:
        metrics.observe_request("http", "paired", seconds)
        metrics.proxy_outcome("trusted")
        reference.observe(seconds)
    sample = metrics.registry.get_sample_value
    assert sample("edge_requests_total", {"kind": "http", "decision": "paired"}) == len(DURATIONS)
    assert sample("edge_proxy_headers_total", {"outcome": "trusted"}) == len(DURATIONS)
    assert sample("edge_proxy_headers_total", {"outcome": "none"}) == 0
    for bound in [*REQUEST_BUCKETS, "+Inf"]:
        le = str(float(bound)) if bound != "+Inf" else "+Inf"
        ours = sample("edge_request_duration_seconds_bucket", {"kind": "http", "le": le})
        theirs = reference_registry.get_sample_value("reference_bucket", {"le": le})
        assert ours == theirs, le
    assert sample("edge_request_duration_seconds_count", {"kind": "http"}) == len(DURATIONS)
    assert sample("edge_request_duration_seconds_sum", {"kind": "http"}) == pytest.approx(
        sum(DURATIONS)
    )
    assert sample("edge_request_duration_seconds_count", {"kind": "websocket"}) == 0


def test_reads_in_between_neither_lose_nor_repeat_a_count() -> None:
    metrics = Metrics(__version__)
    sample = metrics.registry.get_sample_value
    for done in range(1, 31):
        metrics.observe_request("websocket", "denied", 0.002)
        metrics.proxy_outcome("none")
        if done % 7 == 0:
            metrics.render()
        if done % 4 == 0:
            metrics.flush()
        if done % 5 == 0:
            assert (
                sample("edge_requests_total", {"kind": "websocket", "decision": "denied"}) == done
            )
            assert sample("edge_proxy_headers_total", {"outcome": "none"}) == done
            assert sample("edge_request_duration_seconds_count", {"kind": "websocket"}) == done
    text, _ = metrics.render()
    found = samples(text.decode())
    assert (
        found[("edge_requests_total", frozenset({("kind", "websocket"), ("decision", "denied")}))]
        == 30
    )
    assert found[("edge_request_duration_seconds_sum", frozenset({("kind", "websocket")}))] == (
        pytest.approx(30 * 0.002)
    )


def test_a_label_outside_the_bounded_sets_is_still_counted() -> None:
    metrics = Metrics(__version__)
    metrics.observe_request("http", "something-new", 0.01)
    metrics.proxy_outcome("something-else")
    sample = metrics.registry.get_sample_value
    assert sample("edge_requests_total", {"kind": "http", "decision": "something-new"}) == 1
    assert sample("edge_proxy_headers_total", {"outcome": "something-else"}) == 1


# -- two workers, one shared directory ------------------------------------------------------------

PUBLIC_REQUESTS = 37
DENIED_REQUESTS = 11


def _serve_as_a_worker(data: str) -> None:
    """One worker: its own app and store, the shared metrics directory, then a normal stop.

    It leaves with ``os._exit``: what it counted must be in the files by then.
    """
    from edge import create_app

    app = create_app(base_config(Path(data)))
    with client_for(app, REMOTE) as client:
        for _ in range(PUBLIC_REQUESTS):
            assert client.get("/healthz").status_code == 200
        for _ in range(DENIED_REQUESTS):
            assert client.get("/api/devices").status_code == 401
    os._exit(0)


def test_two_workers_totals_are_exact_in_the_shared_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import values

    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored afterwards
    monkeypatch.setenv(MULTIPROC_ENV, "")  # and the variable with it
    prepare_multiprocess_dir(tmp_path / "metrics")  # as edge serve does for several workers
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_serve_as_a_worker, args=(str(tmp_path / f"worker-{n}"),))
        for n in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    text, _ = render_exposition()
    found: dict[Any, float] = samples(text.decode())

    def value(name: str, **labels: str) -> float:
        return found.get((name, frozenset(labels.items())), 0.0)

    both = 2 * (PUBLIC_REQUESTS + DENIED_REQUESTS)
    assert value("edge_requests_total", kind="http", decision="public") == 2 * PUBLIC_REQUESTS
    assert value("edge_requests_total", kind="http", decision="denied") == 2 * DENIED_REQUESTS
    assert value("edge_requests_total", kind="http", decision="paired") == 0
    assert value("edge_proxy_headers_total", outcome="none") == both
    assert value("edge_request_duration_seconds_count", kind="http") == both
    assert value("edge_request_duration_seconds_bucket", kind="http", le="+Inf") == both
    assert value("edge_auth_failures_total", reason="credentials_missing") == 2 * DENIED_REQUESTS
