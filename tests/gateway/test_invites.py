"""Invites end to end: create (REST or socket), redeem in the connect frame, once, with a QR code.

A headless device gets an invite code from an operator and connects with
``auth: {"invite": code}`` beside its signed identity: it is paired at once
with the invite's role, and the code never works again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import segno
from starlette.websockets import WebSocketDisconnect

from edge import create_app
from edge.gateway.protocol import connect_attempt
from edge.pairing.identity import DeviceKey
from edge.pairing.models import Role
from edge.pairing.service import Admitted, Denied, PairingService
from edge.refusals import Denial
from tests.conftest import (
    GATEWAY_TOKEN,
    LOOPBACK,
    REMOTE,
    Device,
    base_config,
    client_for,
    open_ws,
)
from tests.gateway.test_ws import attempt, refused

INVITE_INVALID = (1008, "unauthorized: invite invalid")
LOCAL_URL = "http://localhost:18789"


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return create_app(base_config(tmp_path))


def local_client(app: Any) -> Any:
    return client_for(app, LOOPBACK, LOCAL_URL)


def create_invite(app: Any, **params: Any) -> dict[str, Any]:
    response = local_client(app).post("/api/invites", json=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def svg_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules of segno's SVG path (``M``/``m`` moves, ``h`` runs), as (row, col)."""
    (path,) = re.findall(r'class="qrline"[^>]*\sd="([^"]+)"', svg)
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for command, args in re.findall(r"([MmHh])([^MmHh]*)", path):
        numbers = [float(n) for n in args.replace(",", " ").split()]
        if command == "M":
            x, y = numbers
        elif command == "m":
            x, y = x + numbers[0], y + numbers[1]
        else:
            length = numbers[0] if command == "h" else numbers[0] - x
            dark.update((int(y), int(x) + i) for i in range(int(length)))
            x += length
    return dark


# -- redemption -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["user", "admin"])
def test_invite_pairs_a_fresh_device_at_once_with_the_invites_role_and_name(
    app: Any, role: str
) -> None:
    created = create_invite(app, role=role, name="kitchen display", ttl=600)
    device = Device("whatever the device calls itself")
    hello, close = attempt(app, device, {"invite": created["code"]}, role="user")
    assert close is None and hello["type"] == "hello"
    assert hello["device"] == {"id": device.id, "name": "kitchen display", "role": role}
    stored = app.state.gateway.store.get_device(device.id)
    assert stored.role is Role(role) and stored.approved_by.endswith(
        f"(invite {created['invite']['id']})"
    )
    assert stored.last_ip == REMOTE[0] and stored.last_seen_at is not None  # flushed at stop
    # The device token from the hello works on its own from now on.
    me = client_for(app).get("/api/whoami", headers={"authorization": f"Bearer {device.token}"})
    assert me.json()["auth"]["state"] == "paired"
    admin_call = client_for(app).get(
        "/api/devices", headers={"authorization": f"Bearer {device.token}"}
    )
    assert admin_call.status_code == (200 if role == "admin" else 403)


def test_an_invite_works_once(app: Any) -> None:
    code = create_invite(app)["code"]
    first, second = Device("first"), Device("second")
    hello, _ = attempt(app, first, {"invite": code})
    assert hello["type"] == "hello"
    assert refused(app, second, {"invite": code}) == INVITE_INVALID
    assert refused(app, first, {"invite": code}) == INVITE_INVALID  # not even for its user
    assert app.state.gateway.store.get_device(second.id) is None
    (listed,) = local_client(app).get("/api/invites").json()
    assert listed["usedAt"] is not None


def test_devices_racing_for_one_invite_on_open_sockets_pair_exactly_one(app: Any) -> None:
    code = create_invite(app)["code"]
    devices = [Device(f"racer {n}") for n in range(4)]
    with client_for(app) as client, contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(open_ws(client)) for _ in devices]
        nonces = [ws.receive_json()["nonce"] for ws in sockets]
        for ws, device, nonce in zip(sockets, devices, nonces, strict=True):
            ws.send_text(json.dumps(device.connect_frame(nonce, {"invite": code})))
        replies: list[dict[str, Any] | tuple[int, str]] = []
        for ws in sockets:
            try:
                replies.append(ws.receive_json())
            except WebSocketDisconnect as closed:
                replies.append((closed.code, closed.reason))
    hellos = [r for r in replies if isinstance(r, dict)]
    assert len(hellos) == 1
    assert [r for r in replies if not isinstance(r, dict)] == [INVITE_INVALID] * 3


def test_concurrent_redemptions_in_threads_pair_exactly_one_device(app: Any) -> None:
    service: PairingService = app.state.gateway.service
    _, code = service.create_invite(role=Role.USER, name=None, ttl=60, actor="test")
    keys = [DeviceKey.generate() for _ in range(8)]
    barrier = threading.Barrier(len(keys))
    outcomes: list[Admitted | Denied] = []
    lock = threading.Lock()

    def redeem(key: DeviceKey) -> None:
        frame = {"auth": {"invite": code}, "device": key.device_field("nonce", "user")}
        barrier.wait()
        outcome = service.connect(
            attempt=connect_attempt(frame), nonce="nonce", client_ip="203.0.113.50", local=False, user_agent=None
        )
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=redeem, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    admitted = [o for o in outcomes if isinstance(o, Admitted)]
    assert len(outcomes) == 8 and len(admitted) == 1
    assert {o.denial for o in outcomes if isinstance(o, Denied)} == {Denial.INVITE_INVALID}
    paired = [d for d in service.list_devices() if d.id in {k.device_id for k in keys}]
    assert [d.id for d in paired] == [admitted[0].device.id]


def test_an_expired_invite_is_refused(app: Any) -> None:
    gateway = app.state.gateway
    an_hour_ago = PairingService(gateway.store, GATEWAY_TOKEN, clock=lambda: time.time() - 3600)
    _, code = an_hour_ago.create_invite(role=Role.USER, name=None, ttl=60, actor="test")
    device = Device()
    assert refused(app, device, {"invite": code}) == INVITE_INVALID
    assert gateway.store.get_device(device.id) is None


def test_a_cancelled_invite_is_refused_and_cannot_be_cancelled_twice(app: Any) -> None:
    created = create_invite(app, name="gone")
    invite_id = created["invite"]["id"]
    assert local_client(app).delete(f"/api/invites/{invite_id}").status_code == 200
    assert local_client(app).get("/api/invites").json() == []
    assert refused(app, Device(), {"invite": created["code"]}) == INVITE_INVALID
    again = local_client(app).delete(f"/api/invites/{invite_id}")
    assert again.status_code == 404 and "no unused invite" in again.json()["detail"]


def test_a_made_up_code_is_refused_and_counts_towards_the_lockout(tmp_path: Path) -> None:
    config = base_config(
        tmp_path, auth={"token": GATEWAY_TOKEN, "rate_limit": {"failures": 3, "window": 60}}
    )
    app = create_app(config)
    with client_for(app):
        for _ in range(3):
            assert refused(app, Device(), {"invite": "guessed-code"}) == INVITE_INVALID
        assert refused(app, Device(), {"invite": "guessed-code"}) == (
            1008,
            "unauthorized: too many failed attempts",
        )
        metrics = local_client(app).get("/metrics").text
    assert 'edge_auth_failures_total{reason="invite_invalid"} 3.0' in metrics


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_every_invite_use_is_in_the_audit_trail(app: Any) -> None:
    audit, collect = logging.getLogger("edge.audit"), Collect()
    audit.addHandler(collect)
    device = Device()
    try:
        with client_for(app) as client:
            created = create_invite(app, role="admin", name="kiosk")
            with open_ws(client) as ws:
                assert device.handshake(ws, {"invite": created["code"]})["type"] == "hello"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(" used: " in x for x in collect.lines):
                time.sleep(0.02)
    finally:
        audit.removeHandler(collect)
    invite_id = created["invite"]["id"]
    assert [line for line in collect.lines if " used: " in line] == [
        f"invite {invite_id} used: device {device.id[:12]} (kiosk) paired as admin"
    ]
    assert not any(created["code"] in line for line in collect.lines)


def test_only_a_hash_of_the_code_is_stored(app: Any, tmp_path: Path) -> None:
    code = create_invite(app)["code"]
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("edge.sqlite3*"))
    assert stored and code.encode() not in stored


# -- creation --------------------------------------------------------------------------------------


def test_invite_link_carries_the_code_in_the_fragment_of_the_reached_origin(app: Any) -> None:
    created = create_invite(app, ttl=90)
    code = created["code"]
    assert len(code) == 24 and re.fullmatch(r"[A-Za-z0-9_-]+", code)
    assert created["url"] == f"{LOCAL_URL}/#invite={code}"
    invite = created["invite"]
    assert invite["expiresAt"] - invite["createdAt"] == 90_000
    assert invite["role"] == "user" and invite["createdBy"] == "local"


def test_an_admin_dashboard_socket_can_create_an_invite(app: Any) -> None:
    admin = Device("admin laptop")
    with client_for(app, LOOPBACK, LOCAL_URL) as client, open_ws(client) as ws:
        assert admin.handshake(ws, {})["device"]["role"] == "admin"
        ws.send_text(
            json.dumps(
                {"type": "req", "id": 1, "method": "invites.create", "params": {"role": "user"}}
            )
        )
        while (reply := ws.receive_json())["type"] != "res":
            pass
    assert reply["ok"] is True
    assert reply["result"]["url"].startswith(f"{LOCAL_URL}/#invite=")
    assert reply["result"]["invite"]["createdBy"] == f"device:{admin.id[:12]} (admin laptop)"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"role": "root"}, "'role' must be 'admin' or 'user'"),
        ({"ttl": 0}, "'ttl' must be seconds between 1 and 604800"),
        ({"ttl": "10m"}, "'ttl' must be seconds between 1 and 604800"),
        ({"ttl": True}, "'ttl' must be seconds between 1 and 604800"),
        ({"name": "x" * 65}, "'name' must be a string of at most 64 characters"),
        ({"name": "bell\u0007"}, "a device name must be 1-64 printable characters"),
    ],
)
def test_bad_invite_requests_get_a_specific_400(
    app: Any, params: dict[str, Any], message: str
) -> None:
    response = local_client(app).post("/api/invites", json=params)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_a_user_device_cannot_create_invites(app: Any) -> None:
    code = create_invite(app)["code"]
    device = Device()
    attempt(app, device, {"invite": code})
    response = client_for(app).post(
        "/api/invites", json={}, headers={"authorization": f"Bearer {device.token}"}
    )
    assert response.status_code == 403


def test_qr_code_is_the_invite_url(app: Any) -> None:
    created = create_invite(app, name="tv")
    svg = created["qrSvg"]
    assert svg.startswith("<svg") and "<script" not in svg
    expected = segno.make(created["url"], error="m")
    matrix = [[bool(cell) for cell in row] for row in expected.matrix]
    border = 2
    dark = {(r - border, c - border) for r, c in svg_modules(svg)}
    assert dark == {(r, c) for r, row in enumerate(matrix) for c, on in enumerate(row) if on}


def test_qr_code_decodes_to_the_invite_url(app: Any) -> None:
    import numpy  # both in the test extras: the decode must run, not skip
    import zxingcpp
    created = create_invite(app, role="admin")
    modules = svg_modules(created["qrSvg"])
    size = max(max(r for r, _ in modules), max(c for _, c in modules)) + 1 + 2
    scale, quiet = 6, 4  # draw it as a camera would see it: scaled, with a quiet zone
    image = numpy.full(((size + 2 * quiet) * scale,) * 2, 255, dtype=numpy.uint8)
    for row, col in modules:
        top, left = (row + quiet) * scale, (col + quiet) * scale
        image[top : top + scale, left : left + scale] = 0
    (barcode,) = zxingcpp.read_barcodes(image)
    assert barcode.text == created["url"]
