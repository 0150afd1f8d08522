"""``edge notify status`` against a real ``edge serve`` with two workers and a real receiver.

The receiver fails, then recovers: the status, read by a separate ``edge``
process from the state file the workers share, follows it (failures in a
row, the last error, the delivery waiting), then says delivered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import GATEWAY_TOKEN
from tests.gateway.test_notify import SECRET, Receiver, until
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.status = 503
    server.start()
    yield server
    server.stop()


def status(server: EdgeServer) -> dict[str, Any]:
    (webhook,) = json.loads(server.cli("notify", "status", "--json").stdout)["webhooks"]
    return dict(webhook)


def test_status_follows_a_receiver_that_fails_then_succeeds(
    edge_server_factory: Callable[..., EdgeServer], receiver: Receiver
) -> None:
    url = receiver.url("/hook?token=kept-out-of-the-file")
    server = edge_server_factory(
        {
            # On 127.0.0.1 but not local: `edge pair` then asks and waits, an event to notify.
            "local": {"loopback": False},
            "notify": {
                "webhooks": [{"url": url, "secret": SECRET, "events": ["pairing.requested"]}],
                "max_attempts": 50,
            },
        },
        workers=2,
    )
    never = status(server)
    assert never["lastAttemptAt"] is None and never["consecutiveFailures"] == 0
    assert never["url"] == receiver.url("/hook") and never["events"] == ["pairing.requested"]

    asked = subprocess.run(
        [sys.executable, "-m", "edge.cli", "pair", "--url", server.url, "--token", GATEWAY_TOKEN,
         "--wait", "0", "--name", "box"],
        capture_output=True, text=True, env=server.env, timeout=60,
    )  # fmt: skip
    assert asked.returncode == 1, asked.stderr  # asked to pair, not approved: the event
    until(lambda: len(receiver.events()) >= 2, "two failed attempts", timeout=60)
    failing = until(
        lambda: (s := status(server))["consecutiveFailures"] >= 2 and s, "failures", timeout=60
    )
    assert "503" in failing["lastError"] and failing["lastErrorAt"] == failing["lastAttemptAt"]
    assert failing["pending"] == 1 and failing["lastSuccessAt"] is None
    assert failing["nextAttemptAt"] is not None

    receiver.status = 204
    delivered = until(
        lambda: (s := status(server))["lastSuccessAt"] and s, "the delivery", timeout=60
    )
    assert delivered["consecutiveFailures"] == 0 and delivered["pending"] == 0
    assert delivered["lastAttemptAt"] == delivered["lastSuccessAt"]
    assert "503" in delivered["lastError"]  # kept, with its time, for whoever looks later
    ids = {r.json["id"] for r in receiver.events()}
    assert len(ids) == 1  # one event, sent by one of the two workers
    state = (server.data_dir / "notify" / "state.json").read_text()
    assert "kept-out-of-the-file" not in state

    server.stop()
    after = status(server)
    assert after["pending"] == 0 and after["lastSuccessAt"] == delivered["lastSuccessAt"]
