"""Arbitrary frames on the control socket, before and after ``hello``.

Before ``hello`` whatever a client sends ends in a close with a contract code
and reason (1008 with one of the contract's reasons, or 1009 for an oversized
frame), after at most the ``PAIRING_REQUIRED`` error frame. After ``hello``
every text frame gets exactly one ``res`` and the socket keeps working (binary
frames are ignored). An unhandled exception in the app fails the example: the
test client re-raises it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from edge import create_app
from edge.refusals import Denial
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, Device, base_config, client_for, open_ws

CONTRACT_REASONS = frozenset(denial.reason for denial in Denial)
ADMIN_METHODS = (
    "self.whoami",
    "devices.list",
    "devices.approve",
    "devices.reject",
    "devices.revoke",
    "devices.rename",
    "devices.rotate",
    "invites.list",
    "invites.create",
    "invites.cancel",
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _connect_like(nonce_field: Any, auth: Any, device: Any, role: Any, client: Any) -> str:
    frame: dict[str, Any] = {"type": "connect"}
    for key, value in (("auth", auth), ("device", device), ("role", role), ("client", client)):
        if value is not None:
            frame[key] = value
    if nonce_field is not None:
        frame["nonce"] = nonce_field
    return json.dumps(frame)


auth_values = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "token": st.one_of(st.just(GATEWAY_TOKEN), st.text(max_size=600), json_values),
            "deviceToken": st.one_of(st.text(max_size=60), json_values),
            "invite": st.one_of(st.text(max_size=60), json_values),
        },
    ),
)
device_values = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.text(alphabet="0123456789abcdef", max_size=64), json_values),
            "publicKey": st.one_of(st.text(max_size=50), json_values),
            "signedAt": st.one_of(st.integers(), st.floats(), json_values),
            "signature": st.one_of(st.text(max_size=90), json_values),
        },
    ),
)
connect_frames = st.builds(
    _connect_like,
    st.one_of(st.none(), json_values),
    st.one_of(st.none(), auth_values),
    st.one_of(st.none(), device_values),
    st.one_of(st.none(), st.sampled_from(["user", "admin", "root", ""]), json_values),
    st.one_of(st.none(), json_values, st.fixed_dictionaries({"name": json_values})),
)
text_frames = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    connect_frames,
)
any_frames = st.one_of(
    text_frames.map(lambda text: ("text", text)),
    st.binary(max_size=200).map(lambda data: ("bytes", data)),
)
req_frames = st.one_of(
    text_frames,
    st.builds(
        lambda id_, method, params: json.dumps(
            {"type": "req", "id": id_, "method": method, "params": params}
        ),
        json_values,
        st.one_of(st.sampled_from(ADMIN_METHODS), st.text(max_size=20), json_values),
        st.one_of(
            json_values,
            st.dictionaries(
                st.sampled_from(["requestId", "deviceId", "name", "role", "ttl", "inviteId"]),
                json_values,
            ),
        ),
    ),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    config = base_config(Path(tmp_path_factory.mktemp("fuzz-ws")), logging={"level": "warning"})
    # Generous limits: the fuzzer guesses many wrong secrets from one address.
    config["auth"]["rate_limit"] = {"failures": 100_000, "window": 1, "lockout": 1}
    config["pairing"] = {"max_pending": 100_000, "max_pending_per_client": 10_000}
    with client_for(create_app(config), LOOPBACK, "http://localhost:18789") as test_client:
        yield test_client


def _send(ws: WebSocketTestSession, frame: tuple[str, Any]) -> None:
    kind, payload = frame
    if kind == "text":
        ws.send_text(payload)
    else:
        ws.send_bytes(payload)


def _open_as_remote(client: TestClient) -> Any:
    """A socket the gateway sees as remote: a loopback peer naming a foreign Host is not local."""
    return open_ws(client, {"host": "edge.example.com"})


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(any_frames, min_size=1, max_size=3))
def test_any_frames_before_hello_end_in_a_contract_close(
    client: TestClient, frames: list[tuple[str, Any]]
) -> None:
    with _open_as_remote(client) as ws:
        assert ws.receive_json()["type"] == "challenge"
        for frame in frames:
            _send(ws, frame)
        with pytest.raises(WebSocketDisconnect) as closed:
            for _ in range(3):
                message = ws.receive_json()
                assert message["type"] == "error" and message["code"] == "PAIRING_REQUIRED"
    assert closed.value.code == 1008
    assert closed.value.reason in CONTRACT_REASONS


def test_a_frame_over_64_kib_before_hello_closes_with_1009(client: TestClient) -> None:
    with _open_as_remote(client) as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "connect", "pad": "x" * (64 * 1024)}))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1009


@pytest.fixture(scope="module")
def admin(client: TestClient) -> Device:
    return Device("fuzzing admin")


def _hello(client: TestClient, device: Device) -> Any:
    ws = open_ws(client).__enter__()
    reply = device.handshake(ws, {}, "admin")
    assert reply["type"] == "hello"
    return ws


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(
        st.one_of(
            req_frames.map(lambda text: ("text", text)),
            st.binary(max_size=100).map(lambda data: ("bytes", data)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_frames_after_hello_get_one_answer_each_and_the_socket_keeps_working(
    client: TestClient, admin: Device, frames: list[tuple[str, Any]]
) -> None:
    ws = _hello(client, admin)
    try:
        for frame in frames:
            _send(ws, frame)
        ws.send_text(json.dumps({"type": "req", "id": "probe", "method": "self.whoami"}))
        answers = 0
        while True:
            try:
                message = ws.receive_json()
            except WebSocketDisconnect as closed:
                # only an admin revoking itself may end the socket
                assert (closed.code, closed.reason) == (1008, "device revoked")
                return
            if message["type"] == "event":
                continue
            assert message["type"] == "res"
            if message["id"] == "probe":
                break
            answers += 1
        assert message["ok"] is True and message["result"]["id"] == admin.id
        assert answers == sum(1 for kind, _ in frames if kind == "text")
    finally:
        ws.__exit__(None, None, None)


def test_a_frame_over_1_mib_after_hello_closes_with_1009(client: TestClient, admin: Device) -> None:
    ws = _hello(client, admin)
    try:
        ws.send_text(
            json.dumps({"type": "req", "id": 1, "method": "self.whoami", "pad": "x" * (1 << 20)})
        )
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_json()
        assert closed.value.code == 1009
    finally:
        ws.__exit__(None, None, None)
