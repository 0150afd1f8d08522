"""``edge serve --workers 2``: one scrape adds up both workers, and each event is counted once.

Each worker writes its own files in ``<data_dir>/metrics``; the tests read
those per-worker files to know that both workers took part, then compare the
aggregated exposition with the traffic they sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from edge import __version__
from tests.conftest import GATEWAY_TOKEN, Device
from tests.gateway.test_metrics import Exposition
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

PROXIED = {"x-forwarded-for": "198.51.100.4"}


def scrape(server: EdgeServer) -> Exposition:
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return Exposition(response.text)


def per_worker(server: EdgeServer, kind: str, name: str) -> dict[int, float]:
    """``name`` summed per worker pid, read from that worker's own files (kind: counter, gauge_livesum)."""
    values: dict[int, float] = {}
    for file in (server.data_dir / "metrics").glob(f"{kind}_*.db"):
        pid = int(file.stem.rpartition("_")[2])
        metrics = MultiProcessCollector.merge([str(file)], accumulate=False)
        values[pid] = sum(s.value for m in metrics for s in m.samples if s.name == name)
    return values


def worker_pids(server: EdgeServer) -> set[int]:
    return {int(p.name) for p in (server.data_dir / "run").iterdir() if p.name.isdigit()}


def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def local_admin_socket(stack: ExitStack, server: EdgeServer, device: Device) -> ClientConnection:
    """A local socket (closed with ``stack``) past its hello: the device is an admin."""
    ws = stack.enter_context(connect(server.ws_url, open_timeout=30))
    challenge = json.loads(ws.recv(timeout=5))
    ws.send(json.dumps(device.connect_frame(challenge["nonce"], {}, role="admin")))
    assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    return ws


@contextmanager
def admin_socket_on_every_worker(
    server: EdgeServer, workers: int, admin: Device
) -> Iterator[tuple[list[ClientConnection], int]]:
    """Open local admin sockets until every worker holds one.

    Yields one socket per worker and the number of sockets opened in all (the
    kernel may give several in a row to the same worker; they all stay open).
    """
    chosen: dict[int, ClientConnection] = {}
    with ExitStack() as stack:
        for opened in range(1, 41):
            before = per_worker(server, "gauge_livesum", "edge_websocket_connections")
            # The worker counts the socket before its challenge, so by the hello it is counted.
            ws = local_admin_socket(stack, server, admin)
            after = per_worker(server, "gauge_livesum", "edge_websocket_connections")
            pid = next(p for p, v in after.items() if v > before.get(p, 0))
            chosen.setdefault(pid, ws)
            if len(chosen) == workers:
                yield list(chosen.values()), opened
                return
        raise AssertionError("the kernel never gave a connection to every worker")


def wait_for_event(ws: ClientConnection, event: str) -> dict[str, Any]:
    while True:
        frame = json.loads(ws.recv(timeout=10))
        if frame.get("type") == "event" and frame.get("event") == event:
            return dict(frame)


def ask_to_pair(server: EdgeServer, device: Device) -> str:
    with connect(server.ws_url, additional_headers=PROXIED, open_timeout=30) as ws:
        challenge = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {"token": GATEWAY_TOKEN})))
        error = json.loads(ws.recv(timeout=5))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert error["code"] == "PAIRING_REQUIRED"
    return str(error["requestId"])


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not installed (scripts/install-test-deps)"
)


@needs_promtool
def test_two_workers_add_up_and_the_output_passes_promtool(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(
        {"proxy": {"trusted_proxies": ["127.0.0.1"]}}, workers=2, start=False
    )
    server.data_dir.mkdir(mode=0o700)
    stale = server.data_dir / "metrics"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"left over from an earlier run")
    server.start()
    assert not (stale / "counter_1.db").exists()
    eventually(lambda: len(worker_pids(server)) == 2, "two workers registered")

    before = scrape(server)
    sent = {"local": 0, "public": 0, "denied": 0, "malformed": 0}
    # Fresh connections until both workers have answered some of each kind.
    while (
        len([v for v in per_worker(server, "counter", "edge_requests_total").values() if v > 0]) < 2
        or min(sent.values()) < 5
    ):
        assert sum(sent.values()) < 2000, "one worker never got a connection"
        httpx.get(f"{server.url}/api/devices", timeout=5).raise_for_status()
        sent["local"] += 1
        assert httpx.get(f"{server.url}/healthz", headers=PROXIED, timeout=5).status_code == 200
        sent["public"] += 1
        assert httpx.get(f"{server.url}/api/devices", headers=PROXIED, timeout=5).status_code == 401
        sent["denied"] += 1
        bad = {"x-forwarded-for": "unknown"}
        assert httpx.get(f"{server.url}/healthz", headers=bad, timeout=5).status_code == 200
        sent["malformed"] += 1
    after = scrape(server)

    served = per_worker(server, "counter", "edge_requests_total")
    assert set(served) == worker_pids(server)
    assert all(count > 0 for count in served.values())
    changes = after.changes_since(before)
    assert changes == {
        "edge_requests_total{decision=local,kind=http}": sent["local"],
        "edge_requests_total{decision=public,kind=http}": sent["public"] + sent["malformed"],
        "edge_requests_total{decision=denied,kind=http}": sent["denied"],
        "edge_request_duration_seconds_count{kind=http}": sum(sent.values()),
        "edge_auth_failures_total{reason=credentials_missing}": sent["denied"],
        "edge_proxy_headers_total{outcome=none}": sent["local"] + 1,  # + the second scrape
        "edge_proxy_headers_total{outcome=trusted}": sent["public"] + sent["denied"],
        "edge_proxy_headers_total{outcome=malformed_forwarded}": sent["malformed"],
        # each request above opened its own connection, so each made one owner lookup
        "edge_peer_lookups_total{owner=same-user}": sum(sent.values()) + 1,
    }
    assert after.value("edge_build_info", version=__version__) == 1

    checked = promtool_check(httpx.get(f"{server.url}/metrics", timeout=10).text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""


def test_pairing_events_and_audit_lines_are_counted_once_with_two_workers(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(
        {"proxy": {"trusted_proxies": ["127.0.0.1"]}, "logging": {"format": "json"}}, workers=2
    )
    eventually(lambda: len(worker_pids(server)) == 2, "two workers registered")
    admin, device = Device("admin"), Device("remote laptop")
    with admin_socket_on_every_worker(server, 2, admin) as (sockets, opened):
        before = scrape(server)
        request_id = ask_to_pair(server, device)
        server.cli("devices", "approve", request_id)
        server.cli("devices", "revoke", device.id)
        # A later event every worker pushes to its admin socket: once both have pushed
        # it, both have counted (or left to the other) every event before it.
        server.cli("devices", "rename", device.id, "marker")
        for ws in sockets:
            wait_for_event(ws, "device.renamed")
        after = scrape(server)
    assert after.value("edge_websocket_connections") == opened
    changes = after.changes_since(before)
    pairing = {k: v for k, v in changes.items() if k.startswith("edge_pairing_events_total")}
    assert pairing == {
        "edge_pairing_events_total{event=requested}": 1,
        "edge_pairing_events_total{event=approved}": 1,
        "edge_pairing_events_total{event=revoked}": 1,
    }
    assert after.value("edge_pairing_requests_pending") == 0
    assert after.value("edge_devices_paired", role="user") == 0
    assert after.value("edge_devices_paired", role="admin") == 1

    audit = [
        json.loads(line)
        for line in server.log().splitlines()
        if line.startswith("{") and '"logger":"edge.audit"' in line
    ]
    seqs = [line["seq"] for line in audit]
    assert sorted(seqs) == list(range(1, max(seqs) + 1)), "every event audited exactly once"
    story = [
        (line["event"], line.get("decision"), line.get("actor"), line.get("client_ip"))
        for line in audit
        if line.get("device_id") == device.id
    ]
    assert story == [
        ("pairing.requested", None, None, "198.51.100.4"),
        ("pairing.resolved", "approved", "cli", "198.51.100.4"),
        ("device.revoked", None, "cli", None),
        ("device.renamed", None, "cli", None),
    ]
    assert GATEWAY_TOKEN not in server.log()


def test_a_killed_worker_keeps_its_counts_and_loses_its_sockets(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(workers=2)
    eventually(lambda: len(worker_pids(server)) == 2, "two workers registered")
    for _ in range(20):
        httpx.get(f"{server.url}/api/devices", timeout=5).raise_for_status()
    with admin_socket_on_every_worker(server, 2, Device("admin")) as (_, opened):
        before = scrape(server)
        assert before.value("edge_websocket_connections") == opened
        sockets_by_pid = per_worker(server, "gauge_livesum", "edge_websocket_connections")
        victim = max(sockets_by_pid, key=lambda pid: sockets_by_pid[pid])
        survivors_sockets = sum(v for pid, v in sockets_by_pid.items() if pid != victim)
        os.kill(victim, signal.SIGKILL)
        eventually(
            lambda: scrape(server).value("edge_websocket_connections") == survivors_sockets,
            "the killed worker's sockets dropped from the gauge",
        )
        after = scrape(server)
    assert after.value("edge_requests_total", kind="http", decision="local") == before.value(
        "edge_requests_total", kind="http", decision="local"
    )
    assert after.value("edge_build_info", version=__version__) == 1


@needs_promtool
@pytest.mark.parametrize("workers", [1, 2])
def test_a_listener_of_its_own_adds_up_the_workers_and_the_gateway_port_serves_none(
    edge_server_factory: Callable[..., EdgeServer], workers: int
) -> None:
    from tests.integration.conftest import free_port, wait_for_port

    metrics_port = free_port()
    server = edge_server_factory(
        {"proxy": {"trusted_proxies": ["127.0.0.1"]}, "metrics": {"port": metrics_port}},
        workers=workers,
    )
    wait_for_port(metrics_port)
    eventually(lambda: len(worker_pids(server)) == workers, f"{workers} worker(s) registered")
    listener = f"http://127.0.0.1:{metrics_port}/metrics"

    def scrape_listener() -> Exposition:
        response = httpx.get(listener, timeout=10)
        assert response.status_code == 200, response.text
        return Exposition(response.text)

    before = scrape_listener()
    sent = 0
    while (
        len([v for v in per_worker(server, "counter", "edge_requests_total").values() if v > 0])
        < workers
        or sent < 5
    ):
        assert sent < 2000, "one worker never got a connection"
        assert httpx.get(f"{server.url}/healthz", headers=PROXIED, timeout=5).status_code == 200
        sent += 1
    # The gateway's own port no longer serves metrics, not even to a local client.
    assert httpx.get(f"{server.url}/metrics", timeout=5).status_code == 404
    after = scrape_listener()
    assert after.value("edge_build_info", version=__version__) == 1
    changes = after.changes_since(before)
    assert changes["edge_requests_total{decision=public,kind=http}"] == sent
    assert changes["edge_requests_total{decision=local,kind=http}"] == 1  # the 404 above
    check = promtool_check(after.text)
    assert check.returncode == 0, check.stdout + check.stderr
