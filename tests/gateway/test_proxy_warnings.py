"""Misconfiguration signals are logged once per interval, naming the key to change."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RecordCollector, client_for, logged


@pytest.fixture
def proxy_log() -> Iterator[RecordCollector]:
    with logged("edge.proxy", logging.WARNING) as collector:
        yield collector


def test_headers_from_an_untrusted_peer_warn_once_naming_trusted_proxies(
    app: Any, proxy_log: Any
) -> None:
    with client_for(app, ("10.9.8.7", 5000)) as client:
        for _ in range(50):
            client.get("/api/whoami", headers={"x-forwarded-for": "203.0.113.1"})
    records = [r for r in proxy_log.records if r.name == "edge.proxy"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "10.9.8.7" in message and "proxy.trusted_proxies" in message
    assert records[0].anomaly == "untrusted_proxy_headers"


def test_each_distinct_signal_gets_its_own_warning(app: Any, proxy_log: Any) -> None:
    with client_for(app, ("10.9.8.7", 5000)) as a, client_for(app, ("10.9.8.8", 5000)) as b:
        a.get("/api/whoami", headers={"x-real-ip": "1.2.3.4"})
        b.get("/api/whoami", headers={"forwarded": "for=1.2.3.4"})
    peers = {r.peer for r in proxy_log.records if r.name == "edge.proxy"}
    assert peers == {"10.9.8.7", "10.9.8.8"}


def test_clean_requests_log_nothing(app: Any, proxy_log: Any) -> None:
    with client_for(app) as client:
        for _ in range(10):
            client.get("/api/whoami")
    assert [r for r in proxy_log.records if r.name == "edge.proxy"] == []


@pytest.fixture
def proxied_app(tmp_path: Any) -> Any:
    from edge import create_app
    from tests.conftest import base_config

    config = base_config(tmp_path)
    config["proxy"] = {"trusted_proxies": ["10.0.0.1"]}
    return create_app(config)


@pytest.mark.parametrize(
    ("header", "anomaly", "keys"),
    [
        (
            "203.0.113.5, unknown",
            "malformed_forwarded",
            ("proxy.trusted_proxies", "proxy.client_ip_headers"),
        ),
        (", ".join(["10.0.0.1"] * 100), "too_many_hops", ("proxy.client_ip_headers",)),
    ],
    ids=["malformed", "too-many-hops"],
)
def test_a_broken_chain_from_a_trusted_proxy_warns_once_naming_the_keys(
    proxied_app: Any, proxy_log: Any, header: str, anomaly: str, keys: tuple[str, ...]
) -> None:
    with client_for(proxied_app, ("10.0.0.1", 5000)) as client:
        for _ in range(20):
            whoami = client.get("/api/whoami", headers={"x-forwarded-for": header}).json()
            assert whoami["anomalies"] == [anomaly] and whoami["local"] is False
    records = [r for r in proxy_log.records if r.name == "edge.proxy"]
    assert len(records) == 1
    assert records[0].anomaly == anomaly and records[0].peer == "10.0.0.1"
    message = records[0].getMessage()
    assert "10.0.0.1" in message and "x-forwarded-for" in message.lower()
    for key in keys:
        assert key in message
