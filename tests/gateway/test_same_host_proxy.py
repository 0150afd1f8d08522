"""The same-host proxy warning holds until a correctly forwarded request arrived, then clears.

It clears at once (the local caller's whoami says so) and for the next start
of the gateway on the same data_dir, which then logs no warning at all.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from edge import create_app
from edge.diagnostics import FORWARDED_FILE
from tests.conftest import LOOPBACK, base_config, client_for, logged

WARNING = "nginx is running on this host"
LOCAL_URL = "http://localhost:18789"


@pytest.fixture(autouse=True)
def nginx_on_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.diagnostics.running_reverse_proxies", lambda: ["nginx"])


def test_the_warning_clears_after_a_forwarded_request_and_stays_cleared_at_the_next_start(
    tmp_path: Path,
) -> None:
    config = base_config(tmp_path, proxy={"trusted_proxies": ["127.0.0.1"]})
    with logged("edge.gateway", logging.WARNING) as warned:
        app = create_app(config)
        with client_for(app, LOOPBACK, LOCAL_URL) as client:
            before = client.get("/api/whoami").json()["gateway"]["sameHostProxy"]
            assert WARNING in before["warning"] and before["forwarded"] is None
            forwarded = client.get("/api/whoami", headers={"x-forwarded-for": "198.51.100.4"})
            assert forwarded.json()["client"]["ip"] == "198.51.100.4"
            assert "gateway" not in forwarded.json()  # a proxied visitor is not shown it
            after = client.get("/api/whoami").json()["gateway"]["sameHostProxy"]
            deadline = time.monotonic() + 5
            while not (tmp_path / "data" / FORWARDED_FILE).exists():
                assert time.monotonic() < deadline, "the forwarded request was never recorded"
                time.sleep(0.05)
    assert any(WARNING in message for message in warned.messages)
    assert after["warning"] is None
    assert after["forwarded"]["peer"] == "127.0.0.1"
    assert after["forwarded"]["header"] == "x-forwarded-for"
    assert after["forwarded"]["client"] == "198.51.100.4"

    restarted_app = create_app(config)
    with (
        logged("edge.gateway", logging.INFO) as restarted,
        client_for(restarted_app, LOOPBACK, LOCAL_URL) as c,
    ):
        again = c.get("/api/whoami").json()["gateway"]["sameHostProxy"]
    assert again["warning"] is None and again["forwarded"] is not None
    messages = restarted.messages
    assert not any(WARNING in message for message in messages)
    assert any("forwards as it should" in message for message in messages)


def test_a_proxied_request_with_an_anomaly_does_not_clear_it(tmp_path: Path) -> None:
    config = base_config(tmp_path)  # no trusted proxy: its headers are an anomaly
    with client_for(create_app(config), LOOPBACK, LOCAL_URL) as client:
        client.get("/api/whoami", headers={"x-forwarded-for": "198.51.100.4"})
        local = client.get("/api/whoami").json()["gateway"]["sameHostProxy"]
    assert WARNING in local["warning"] and local["forwarded"] is None
    assert not (tmp_path / "data" / FORWARDED_FILE).exists()
