"""Headless pairing against a real ``edge serve``: ``edge devices invite`` then ``edge pair --invite``.

The operator's commands and the device run as separate processes, as they
would on two machines; with ``local.loopback`` off the device on 127.0.0.1 is
remote and must use its invite. Webhooks go to a receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import GATEWAY_TOKEN, Device
from tests.gateway.test_notify import SECRET, Receiver
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

REMOTE_LOOPBACK = {"local": {"loopback": False}}


def pair_device(server: EdgeServer, pair_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``edge pair`` as a device with its own key directory."""
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "pair", "--url", server.url, *args],
        env={**server.env, "EDGE_PAIR_DIR": str(pair_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def invite(server: EdgeServer, *args: str) -> dict[str, Any]:
    created = server.cli("devices", "invite", "--url", server.url, "--json", *args)
    return dict(json.loads(created.stdout))


def listing(server: EdgeServer) -> dict[str, Any]:
    return dict(json.loads(server.cli("devices", "list", "--json").stdout))


def test_a_headless_device_pairs_with_an_invite_from_the_cli_once(
    edge_server_factory: Callable[..., EdgeServer], tmp_path: Path
) -> None:
    server = edge_server_factory(REMOTE_LOOPBACK)
    created = invite(server, "--role", "admin", "--name", "rack sensor", "--ttl", "5m")
    assert created["url"] == f"{server.url}/#invite={created['code']}"
    assert created["invite"]["role"] == "admin" and created["invite"]["name"] == "rack sensor"

    paired = pair_device(server, tmp_path / "sensor", "--invite", created["code"])
    assert paired.returncode == 0, paired.stderr
    assert "paired as 'rack sensor'" in paired.stdout and "role admin" in paired.stdout
    (device,) = listing(server)["devices"]
    assert device["name"] == "rack sensor" and device["role"] == "admin"
    assert device["approvedBy"] == f"cli (invite {created['invite']['id']})"

    status = pair_device(server, tmp_path / "sensor", "--status")
    assert status.returncode == 0 and "OK" in status.stdout  # its device token works alone

    again = pair_device(server, tmp_path / "intruder", "--invite", created["code"])
    assert again.returncode == 1
    assert "unauthorized: invite invalid" in again.stderr
    assert len(listing(server)["devices"]) == 1
    table = server.cli("devices", "invites").stdout
    assert created["invite"]["id"] in table and "ago" in table  # listed as used


def test_a_cancelled_invite_no_longer_pairs(
    edge_server_factory: Callable[..., EdgeServer], tmp_path: Path
) -> None:
    server = edge_server_factory(REMOTE_LOOPBACK)
    created = invite(server)
    cancelled = server.cli("devices", "invites", "--cancel", created["invite"]["id"])
    assert f"cancelled invite {created['invite']['id']}" in cancelled.stdout
    refused = pair_device(server, tmp_path / "late", "--invite", created["code"])
    assert refused.returncode == 1 and "unauthorized: invite invalid" in refused.stderr
    twice = server.cli("devices", "invites", "--cancel", created["invite"]["id"], check=False)
    assert twice.returncode == 1 and "no unused invite" in twice.stderr
    assert listing(server)["devices"] == []


def test_bad_invite_options_are_usage_errors(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(REMOTE_LOOPBACK, start=False)
    for args, message in (
        (("--ttl", "8d"), "between 1 second and 7 days"),
        (("--ttl", "soon"), "is not a duration like 90s"),
        (("--role", "root"), "'root' is not one of"),
    ):
        result = server.cli("devices", "invite", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_real_client_sees_the_invite_invalid_close_reason(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(REMOTE_LOOPBACK)
    device = Device("made-up code")
    with connect(server.ws_url, open_timeout=10) as ws:
        challenge = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], {"invite": "not-a-code"})))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1008,
        "unauthorized: invite invalid",
    )


def test_two_workers_notify_each_event_once(
    edge_server_factory: Callable[..., EdgeServer], receiver: Receiver, tmp_path: Path
) -> None:
    events = ["pairing.requested", "pairing.resolved", "invite.used", "device.revoked"]
    webhook = {"url": receiver.url(), "secret": SECRET, "events": events}
    server = edge_server_factory({**REMOTE_LOOPBACK, "notify": {"webhooks": [webhook]}}, workers=2)
    code = invite(server, "--name", "kiosk")["code"]
    assert pair_device(server, tmp_path / "kiosk", "--invite", code).returncode == 0
    (device,) = listing(server)["devices"]
    server.cli("devices", "revoke", device["id"])
    asked = pair_device(server, tmp_path / "laptop", "--token", GATEWAY_TOKEN, "--wait", "0")
    assert asked.returncode == 1 and "waiting for an operator" in asked.stderr
    # `approve --latest` only shows the newest request and the command; that command approves.
    (command,) = [
        line.split()
        for line in server.cli("devices", "approve", "--latest").stdout.splitlines()
        if "edge devices approve" in line
    ]
    server.cli(*command[1:])

    deadline = time.monotonic() + 20
    while len(receiver.events()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # room for a duplicate from the other worker to show up
    received = receiver.events()
    assert sorted(r.json["type"] for r in received) == sorted(events), server.log()
    assert len({r.json["id"] for r in received}) == 4
    assert all(r.signed_with(SECRET) for r in received)
    assert all(r.headers["x-edge-attempt"] == "1" for r in received)
