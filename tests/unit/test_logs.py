"""Log lines: the JSON and text formats, rate-limited warnings, the audit trail, no secrets."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from edge import create_app
from edge.config import LoggingSettings
from edge.logs import (
    REDACTED,
    JsonFormatter,
    SignalWarner,
    TextFormatter,
    audit_event,
    audit_fields,
    audit_message,
    is_secret_field,
    setup_logging,
)
from edge.pairing.models import Event
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, base_config, client_for

DEVICE_ID = "5ca1698ee351ab049d5e23e0a9e438b4169574df6d169a0dfcf0ec827bc1625b"


def record(
    msg: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object
) -> logging.LogRecord:
    logger = logging.getLogger("edge.test")
    return logger.makeRecord("edge.test", logging.INFO, __file__, 1, msg, args, None, extra=extra)


def json_lines(text: str, logger: str | None = None) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if logger is None or line["logger"] == logger]


@pytest.fixture
def restore_edge_logger() -> Iterator[None]:
    logger = logging.getLogger("edge")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


# -- formatters ------------------------------------------------------------------------------------


def test_json_line_has_time_level_logger_message_and_extra_fields() -> None:
    line = JsonFormatter().format(record(client="203.0.113.7", decision="denied", status=401))
    data = json.loads(line)
    assert data["level"] == "info"
    assert data["logger"] == "edge.test"
    assert data["msg"] == "hello world"
    assert data["client"] == "203.0.113.7"
    assert data["decision"] == "denied"
    assert data["status"] == 401
    assert data["ts"].endswith("Z") and "T" in data["ts"]
    assert "\n" not in line


def test_json_line_keeps_unicode_and_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.getLogger("edge.test").makeRecord(
            "edge.test",
            logging.ERROR,
            __file__,
            1,
            "failed",
            (),
            sys.exc_info(),
            extra={"name_": "Zoë"},
        )
    data = json.loads(JsonFormatter().format(rec))
    assert data["name_"] == "Zoë"
    assert "ValueError: boom" in data["exc"]


def test_text_line_quotes_values_that_need_it() -> None:
    line = TextFormatter().format(record(detail="not paired", ip="::1", empty="", nothing=None))
    assert line.endswith('hello world detail="not paired" ip=::1 empty="" nothing=null')


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_fields_named_like_credentials_are_redacted(formatter: logging.Formatter) -> None:
    line = formatter.format(
        record(device_token="abc123secret", authorization="Bearer abc123secret", token_hash="f00d")
    )
    assert "abc123secret" not in line and "f00d" not in line
    assert line.count(REDACTED) == 3


def test_secret_field_names() -> None:
    for name in (
        "token",
        "deviceToken",
        "gateway_token",
        "Authorization",
        "cookie",
        "secret",
        "code_hash",
    ):
        assert is_secret_field(name), name
    for name in ("client", "reason", "decision", "device_id", "actor", "status"):
        assert not is_secret_field(name), name


# -- setup -----------------------------------------------------------------------------------------


def test_setup_is_idempotent_and_follows_the_current_stderr(
    capsys: pytest.CaptureFixture[str], restore_edge_logger: None
) -> None:
    setup_logging(LoggingSettings(format="json"))
    setup_logging(LoggingSettings(format="json"))
    logger = logging.getLogger("edge")
    # Only Edge's own handler counts: pytest may attach capture handlers of its own.
    assert len([h for h in logger.handlers if type(h).__module__ == "edge.logs"]) == 1
    logging.getLogger("edge.access").info("first", extra={"decision": "local"})
    assert json_lines(capsys.readouterr().err)[0]["decision"] == "local"
    setup_logging(LoggingSettings(format="text", level="warning"))
    logging.getLogger("edge.access").info("hidden")
    logging.getLogger("edge.access").warning("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err
    assert "WARNING edge.access: shown" in err


def test_json_format_also_reformats_uvicorn_handlers(restore_edge_logger: None) -> None:
    uvicorn_logger = logging.getLogger("uvicorn.error")
    handler = logging.StreamHandler(io.StringIO())
    uvicorn_logger.addHandler(handler)
    try:
        setup_logging(LoggingSettings(format="json"))
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        uvicorn_logger.removeHandler(handler)


# -- rate-limited warnings -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_signal_warner_logs_each_signal_once_per_interval_and_counts_the_rest() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("edge.test.warner")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    clock = FakeClock()
    warner = SignalWarner(logger, interval=60, clock=clock)
    try:
        assert warner.warn("untrusted:10.0.0.1", "proxy headers from 10.0.0.1", peer="10.0.0.1")
        assert not warner.warn("untrusted:10.0.0.1", "proxy headers from 10.0.0.1")
        assert not warner.warn("untrusted:10.0.0.1", "proxy headers from 10.0.0.1")
        assert warner.warn("untrusted:10.0.0.2", "proxy headers from 10.0.0.2")
        clock.now += 61
        assert warner.warn("untrusted:10.0.0.1", "proxy headers from 10.0.0.1")
    finally:
        logger.removeHandler(handler)
    lines = json_lines(stream.getvalue())
    assert [line["signal"] for line in lines] == [
        "untrusted:10.0.0.1",
        "untrusted:10.0.0.2",
        "untrusted:10.0.0.1",
    ]
    assert lines[0]["peer"] == "10.0.0.1"
    assert lines[2]["msg"].endswith("(2 more like this since the last warning)")


# -- the audit trail -------------------------------------------------------------------------------


def event(type_: str, **data: object) -> Event:
    return Event(seq=7, type=type_, data=data, at=time.time())


def test_audit_of_an_approval_names_the_actor_and_the_address() -> None:
    approved = event(
        "pairing.resolved",
        request_id="K7QF-2M9D",
        device_id=DEVICE_ID,
        name="Alice's laptop",
        role="user",
        reason="not-paired",
        client_ip="198.51.100.4",
        decision="approved",
        actor="device:0123456789ab (admin phone)",
        granted_role="user",
    )
    assert audit_message(approved) == (
        "pairing request K7QF-2M9D approved by device:0123456789ab (admin phone): "
        "device 5ca1698ee351 (Alice's laptop), requested from 198.51.100.4"
    )
    fields = audit_fields(approved)
    assert fields["event"] == "pairing.resolved"
    assert fields["seq"] == 7
    assert fields["actor"] == "device:0123456789ab (admin phone)"
    assert fields["client_ip"] == "198.51.100.4"
    assert fields["device_name"] == "Alice's laptop"
    assert fields["device_id"] == DEVICE_ID


@pytest.mark.parametrize(
    ("type_", "data", "message"),
    [
        (
            "pairing.requested",
            {
                "request_id": "K7QF-2M9D",
                "device_id": DEVICE_ID,
                "name": "tv",
                "role": "user",
                "reason": "not-paired",
                "client_ip": None,
            },
            "pairing request K7QF-2M9D from an unknown address: device 5ca1698ee351 (tv) asks "
            "for user (not-paired)",
        ),
        (
            "device.revoked",
            {"device_id": DEVICE_ID, "name": "tv", "actor": "cli"},
            "device 5ca1698ee351 (tv) revoked by cli",
        ),
        (
            "device.paired",
            {"device_id": DEVICE_ID, "name": "tv", "role": "admin", "actor": "local"},
            "device 5ca1698ee351 (tv) paired as admin by local",
        ),
        (
            "device.token_rotated",
            {"device_id": DEVICE_ID, "name": "tv", "actor": "cli", "reason": "rotate"},
            "device token of 5ca1698ee351 (tv) replaced (rotate) by cli",
        ),
        (
            "auth.lockout",
            {"client": "203.0.113.9", "failures": 10, "until": 1.0, "lockout": 300},
            "client 203.0.113.9 locked out for 300s after 10 failed attempts",
        ),
        (
            "invite.used",
            {
                "invite_id": "AB12-CD34",
                "device_id": DEVICE_ID,
                "device_name": "tv",
                "granted_role": "user",
                "actor": "invite",
            },
            "invite AB12-CD34 used: device 5ca1698ee351 (tv) paired as user",
        ),
        ("something.new", {"actor": "cli"}, "something.new"),
    ],
)
def test_audit_messages(type_: str, data: dict[str, object], message: str) -> None:
    assert audit_message(event(type_, **data)) == message


def test_audit_fields_never_collide_with_log_record_attributes_or_leak_secrets() -> None:
    fields = audit_fields(event("odd", msg="x", args="y", client="10.0.0.1", code_hash="f00d"))
    assert fields["data_msg"] == "x"
    assert fields["data_args"] == "y"
    assert fields["client_ip"] == "10.0.0.1"
    assert fields["code_hash"] == REDACTED
    stream = io.StringIO()
    logger = logging.getLogger("edge.test.audit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        audit_event(event("odd", msg="x", args="y", name="n"), logger)
    finally:
        logger.removeHandler(handler)
    line = json_lines(stream.getvalue())[0]
    assert line["msg"] == "odd"
    assert line["device_name"] == "n"


# -- through the gateway ---------------------------------------------------------------------------


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_json_access_lines_carry_client_decision_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_edge_logger: None
) -> None:
    app = create_app(base_config(tmp_path, logging={"format": "json", "access_log": True}))
    remote = client_for(app, REMOTE)
    remote.get("/healthz")
    remote.get("/api/devices")
    remote.get("/api/whoami", headers={"authorization": "Bearer not-a-token"})
    client_for(app, LOOPBACK, "http://localhost:18789").get("/api/devices")
    lines = json_lines(capsys.readouterr().err, "edge.access")
    summary = [(x["path"], x["status"], x["client"], x["decision"], x.get("reason")) for x in lines]
    assert summary == [
        ("/healthz", 200, "203.0.113.7", "public", None),
        ("/api/devices", 401, "203.0.113.7", "denied", "credentials_missing"),
        ("/api/whoami", 200, "203.0.113.7", "public", "device_token_invalid"),
        ("/api/devices", 200, "127.0.0.1", "local", None),
    ]
    assert all(x["kind"] == "http" and x["method"] == "GET" and x["ms"] >= 0 for x in lines)


def test_refusals_are_logged_even_without_the_access_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_edge_logger: None
) -> None:
    app = create_app(base_config(tmp_path, logging={"format": "json"}))
    client_for(app, REMOTE).get("/healthz")
    client_for(app, REMOTE).get("/api/devices")
    lines = json_lines(capsys.readouterr().err, "edge.access")
    assert [(x["path"], x["decision"]) for x in lines] == [("/api/devices", "denied")]


def test_audit_lines_follow_a_pairing_through_the_gateway_without_any_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_edge_logger: None
) -> None:
    scrape_token = "scrape-token-0123456789"
    app = create_app(
        base_config(
            tmp_path,
            logging={"format": "json", "access_log": True},
            metrics={"bearer_token": scrape_token},
        )
    )
    gateway = app.state.gateway
    device = Device("Bob's tablet")
    remote = client_for(app, REMOTE)
    captured: list[str] = []

    def everything() -> str:
        captured.append(capsys.readouterr().err)
        return "".join(captured)

    with client_for(app, LOOPBACK, "http://localhost:18789"):
        with remote.websocket_connect("/ws") as ws:
            request_id = device.handshake(ws, {"token": GATEWAY_TOKEN})["requestId"]
        gateway.service.approve(request_id, actor="cli")
        with remote.websocket_connect("/ws") as ws:
            device_token = device.handshake(ws, {"token": GATEWAY_TOKEN})["deviceToken"]
        remote.get("/api/whoami", headers={"authorization": f"Bearer {device_token}"})
        remote.get("/metrics", headers={"authorization": f"Bearer {scrape_token}"})
        with remote.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect):
            device.handshake(ws, {"token": GATEWAY_TOKEN + "x"})
        gateway.service.revoke(device.id, actor="cli")
        eventually(lambda: '"event":"device.revoked"' in everything(), "revocation audited")
    text = everything()
    assert [line["event"] for line in json_lines(text, "edge.audit")] == [
        "pairing.requested",
        "pairing.resolved",
        "device.token_rotated",
        "device.revoked",
    ]
    assert any(
        line.get("reason") == "gateway_token_mismatch" for line in json_lines(text, "edge.ws")
    )
    for secret in (GATEWAY_TOKEN, device_token, scrape_token):
        assert secret not in text


def test_audit_line_names_who_approved_and_from_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_edge_logger: None
) -> None:
    app = create_app(base_config(tmp_path, logging={"format": "json"}))
    device = Device("Bob's tablet")
    captured: list[str] = []

    def audit_lines() -> list[dict[str, Any]]:
        captured.append(capsys.readouterr().err)
        return json_lines("".join(captured), "edge.audit")

    with client_for(app, LOOPBACK, "http://localhost:18789"):
        with client_for(app, REMOTE).websocket_connect("/ws") as ws:
            request_id = device.handshake(ws, {"token": GATEWAY_TOKEN})["requestId"]
        app.state.gateway.service.approve(request_id, actor="cli")
        eventually(lambda: len(audit_lines()) == 2, "request and approval audited")
    requested, approved = audit_lines()
    assert requested["event"] == "pairing.requested"
    assert requested["client_ip"] == "203.0.113.7"
    assert requested["request_id"] == request_id
    assert approved["event"] == "pairing.resolved"
    assert approved["decision"] == "approved"
    assert approved["actor"] == "cli"
    assert approved["client_ip"] == "203.0.113.7"
    assert approved["device_id"] == device.id
    assert approved["device_name"] == "Bob's tablet"
    assert approved["msg"].startswith(f"pairing request {request_id} approved by cli: device")


def test_protocol_debug_records_are_dropped_whatever_the_level(
    restore_edge_logger: None,
) -> None:
    """uvicorn lends its logger to websockets, whose debug lines quote headers and frames."""
    import websockets

    from edge.logs import ProtocolContentFilter, silence_protocol_content

    silence_protocol_content()
    silence_protocol_content()  # idempotent
    logger = logging.getLogger("uvicorn.error")
    assert sum(isinstance(f, ProtocolContentFilter) for f in logger.filters) == 1
    frame_line = str(Path(websockets.__file__).parent / "legacy" / "protocol.py")

    def record(level: int, pathname: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", level, pathname, 1, "< TEXT %r", ("x",), None)

    assert not logger.filter(record(logging.DEBUG, frame_line))
    assert not logger.filter(record(5, frame_line))  # uvicorn's TRACE
    assert logger.filter(record(logging.INFO, frame_line))  # connection errors stay
    assert logger.filter(record(logging.DEBUG, str(Path(logging.__file__))))
