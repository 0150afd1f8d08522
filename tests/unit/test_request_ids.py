"""Request ids and the process log configuration, in one process (the real server: test_json_logging).

Which ``X-Request-ID`` is believed, that the answer echoes the id, that an
upstream receives it in place of any spelling a client sent, that log lines
written during the request carry it, and that uvicorn's coloured copy of a
message and terminal escapes never reach a line.
"""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import create_app, request_ids
from edge.config import LoggingSettings
from edge.gateway.context import ANONYMOUS
from edge.gateway.forwarding.headers import upstream_request_headers
from edge.logs import JsonFormatter, TextFormatter, log_config, shared_filter
from edge.net import resolve
from edge.net.resolve import ResolverPolicy
from tests.conftest import LOOPBACK, REMOTE, base_config, client_for

GENERATED = re.compile(r"^[0-9a-f]{32}$")


def test_only_a_trusted_peers_valid_id_is_taken() -> None:
    given = [(b"x-request-id", b"proxy-abc-123")]
    assert request_ids.choose(given, trusted_peer=True) == "proxy-abc-123"
    assert GENERATED.match(request_ids.choose(given, trusted_peer=False))
    for bad in (b"", b"a" * 129, b"two words", b"tab\there", "caf\u00e9".encode(), b"a\x7f"):
        assert GENERATED.match(request_ids.choose([(b"x-request-id", bad)], trusted_peer=True))
    assert request_ids.acceptable(b"a" * 128) == "a" * 128
    assert request_ids.choose([], trusted_peer=True) != request_ids.choose([], trusted_peer=True)


def test_events_are_stamped_with_the_current_request_only() -> None:
    assert request_ids.stamped({"a": 1}) == {"a": 1}
    token = request_ids.current.set("rid-1")
    try:
        assert request_ids.stamped({"a": 1}) == {"a": 1, "x_request_id": "rid-1"}
    finally:
        request_ids.current.reset(token)


def test_the_upstream_gets_edges_id_in_place_of_every_client_spelling() -> None:
    resolution = resolve(("203.0.113.9", 5000), [], ResolverPolicy())
    client = [
        (b"X-Request-ID", b"forged-1"),
        (b"x_request_id", b"forged-2"),
        (b"accept", b"*/*"),
    ]
    out = upstream_request_headers(client, resolution, ANONYMOUS, request_id="edge-id")
    assert [v for n, v in out if n.lower().replace(b"_", b"-") == b"x-request-id"] == [b"edge-id"]
    assert (b"accept", b"*/*") in out
    kept = upstream_request_headers(client, resolution, ANONYMOUS)
    assert (b"X-Request-ID", b"forged-1") in kept  # no id of Edge's: the header is the app's


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Edge's log as JSON into a buffer, with the filters ``log_config`` installs."""
    logger = logging.getLogger("edge")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(shared_filter("request_id"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    yield buffer
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def lines(buffer: io.StringIO, name: str) -> list[dict[str, object]]:
    parsed = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [line for line in parsed if line["logger"] == name]


def test_the_answer_echoes_the_id_and_the_access_line_carries_it(
    tmp_path: Path, captured: io.StringIO
) -> None:
    config = base_config(
        tmp_path,
        proxy={"trusted_proxies": ["127.0.0.1"]},
        logging={"access_log": True},
    )
    app = create_app(config)
    with client_for(app, LOOPBACK) as proxy, client_for(app, REMOTE) as stranger:
        trusted = proxy.get("/healthz", headers={"X-Request-ID": "lb-0001"})
        forged = stranger.get("/api/devices", headers={"X-Request-ID": "lb-0001"})
    assert trusted.headers["x-request-id"] == "lb-0001"
    own = forged.headers["x-request-id"]
    assert forged.status_code == 401 and GENERATED.match(own)
    by_id = {line["x_request_id"]: line for line in lines(captured, "edge.access")}
    assert by_id["lb-0001"]["path"] == "/healthz"
    assert by_id[own]["path"] == "/api/devices" and by_id[own]["status"] == 401


def test_log_config_writes_uvicorns_lines_as_json_without_colour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate)
        for name in ("edge", "uvicorn", "uvicorn.error", "uvicorn.access", "")
        for lg in [logging.getLogger(name or None)]
    }
    try:
        logging.config.dictConfig(log_config(LoggingSettings(format="json")))
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on %s",
            "http://127.0.0.1:1",
            extra={"color_message": "Uvicorn running on \x1b[1m%s\x1b[0m"},
        )
        logging.getLogger("websockets.server").warning("\x1b[31mred\x1b[0m alert")
        token = request_ids.current.set("rid-9")
        try:
            logging.getLogger("edge.access").info("GET / 200")
        finally:
            request_ids.current.reset(token)
        err = capsys.readouterr().err
    finally:
        for name, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(name or None)
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
    parsed = [json.loads(line) for line in err.splitlines()]
    assert "\x1b" not in err
    assert [line["logger"] for line in parsed] == [
        "uvicorn.error",
        "websockets.server",
        "edge.access",
    ]
    assert parsed[0]["msg"] == "Uvicorn running on http://127.0.0.1:1"
    assert all("color_message" not in line for line in parsed)
    assert parsed[1]["msg"] == "red alert"
    assert parsed[2]["x_request_id"] == "rid-9"


def test_text_lines_lose_colour_and_uvicorns_copy_too() -> None:
    logger = logging.getLogger("uvicorn.error")
    line = TextFormatter().format(
        logger.makeRecord(
            "uvicorn.error",
            logging.INFO,
            __file__,
            1,
            "\x1b[32mStarted\x1b[0m server process [%d]",
            (42,),
            None,
            extra={"color_message": "x"},
        )
    )
    assert line.endswith("INFO uvicorn.error: Started server process [42]")
