"""The control socket's wire format becomes typed attempts at the edge, before pairing sees it."""

from __future__ import annotations

import json

import pytest

from edge.gateway.protocol import (
    BadCall,
    Call,
    connect_attempt,
    error_frame,
    read_call,
    read_connect,
    result_frame,
    with_session_cookie,
)
from edge.pairing.models import ConnectAttempt, MalformedConnect, Role


@pytest.mark.parametrize(
    "text", [None, "", "not json", "[]", '{"type": "req"}', '"connect"', "{" * 100]
)
def test_a_first_frame_that_is_no_connect_frame_is_none(text: str | None) -> None:
    assert read_connect(text) is None


def test_a_connect_frame_becomes_an_attempt_with_its_claimed_device() -> None:
    device = {"id": "abc", "publicKey": "k", "signature": "s", "signedAt": 1}
    text = json.dumps(
        {
            "type": "connect",
            "auth": {"invite": "code-1"},
            "role": "admin",
            "client": {"name": "  kiosk  "},
            "device": device,
        }
    )
    attempt = read_connect(text)
    assert isinstance(attempt, ConnectAttempt)
    assert (attempt.credential, attempt.secret, attempt.role, attempt.name) == (
        "invite",
        "code-1",
        Role.ADMIN,
        "kiosk",
    )
    assert attempt.device == device and attempt.device_id == "abc"
    assert attempt.empty_auth is False
    assert "code-1" not in repr(attempt)


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ({"auth": []}, "auth must be an object"),
        ({"auth": {"password": "x"}}, "unknown field 'password'"),
        ({"auth": {"token": 1}}, "auth.token must be a string"),
        ({"auth": {"token": "x" * 513}}, "longer than 512"),
        ({"auth": {"token": "a", "invite": "b"}}, "only one of"),
        ({"role": "root"}, 'role must be "admin" or "user"'),
        ({"client": "me"}, "client must be an object"),
        ({"client": {"name": 5}}, "client.name must be a string"),
        ({"client": {"name": "a\u0000b"}}, "printable characters"),
    ],
)
def test_a_malformed_connect_frame_says_which_field(frame: dict[str, object], says: str) -> None:
    attempt = connect_attempt({"type": "connect", **frame})
    assert isinstance(attempt, MalformedConnect) and says in attempt.detail


def test_an_empty_auth_can_take_the_session_cookie() -> None:
    attempt = connect_attempt({"type": "connect", "auth": {}, "device": {"id": "d1"}})
    assert isinstance(attempt, ConnectAttempt)
    assert attempt.empty_auth and attempt.credential is None
    with_cookie = with_session_cookie(attempt, "device-token")
    assert (with_cookie.credential, with_cookie.secret) == ("deviceToken", "device-token")
    assert with_cookie.device_id == "d1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "req", "id": 7, "method": "devices.list"}', Call(7, "devices.list", {})),
        (
            '{"type": "req", "id": true, "method": "m", "params": {"a": 1}}',
            Call(None, "m", {"a": 1}),
        ),
        ('{"type": "event"}', BadCall(None, "expected a 'req' frame")),
        ('{"type": "req", "id": "x", "method": 3}', BadCall("x", "method and params required")),
        (
            '{"type": "req", "id": "x", "method": "m", "params": []}',
            BadCall("x", "method and params required"),
        ),
    ],
)
def test_frames_after_hello_are_calls_or_bad_calls(text: str, expected: Call | BadCall) -> None:
    assert read_call(text) == expected


def test_an_undecodable_frame_after_hello_is_a_bad_call() -> None:
    call = read_call("[" * 100)
    assert isinstance(call, BadCall) and call.id is None
    assert call.message.startswith("frame refused: ")


def test_answers_have_the_res_shape() -> None:
    assert result_frame(1, {"ok": 1}) == {"type": "res", "id": 1, "ok": True, "result": {"ok": 1}}
    assert error_frame("a", "bad_request", "no") == {
        "type": "res",
        "id": "a",
        "ok": False,
        "error": {"code": "bad_request", "message": "no"},
    }
