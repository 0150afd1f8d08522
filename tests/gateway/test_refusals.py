"""One refusal table: every close frame and HTTP error body comes from ``edge.refusals``.

The dashboard reads the table from the gateway instead of keeping its own
copy, so a refusal's words can only be changed in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.refusals import (
    MAX_CLOSE_REASON_BYTES,
    Denial,
    Refusal,
    Rejection,
    close_frame,
    http_answer,
    http_body,
    ui_table,
)
from tests.conftest import REMOTE, client_for

UI_DIR = Path(__file__).resolve().parents[2] / "edge" / "ui"
ROWS = [*Denial, *Rejection]


def test_the_served_table_is_the_module_s_and_is_public(app: Any) -> None:
    with client_for(app, REMOTE) as client:
        response = client.get("/api/refusals")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == ui_table()


def test_every_refusal_that_closes_the_control_socket_is_served_with_what_the_page_does() -> None:
    table = ui_table()["closeReasons"]
    socket_denials = [d for d in Denial if d.row.client is not None]
    assert len(socket_denials) == 14
    closing = {Rejection.STORE_UNAVAILABLE, Rejection.SERVER_RESTARTING, Rejection.FRAME_TOO_LARGE}
    assert {r for r in Rejection if r.row.client is not None} == closing
    assert set(table) == {r.reason for r in (*socket_denials, *closing)}
    for refusal in (*socket_denials, *closing):
        entry = table[refusal.reason]
        assert (entry["reason"], entry["closeCode"]) == (refusal.metric_label, refusal.close_code)
        assert entry["next"] in {
            "ask-token",
            "retry-now",
            "backoff",
            "wait",
            "manual",
            "start-over",
        }
        assert set(entry["drop"]) <= {"session", "gatewayToken", "invite"}
    assert {table[d.reason]["closeCode"] for d in socket_denials} == {1008}
    assert [table[r.reason]["closeCode"] for r in sorted(closing, key=lambda r: r.close_code)] == [
        1009,
        1012,
        1013,
    ]


@pytest.mark.parametrize("name", ["app.js", "admin.js", "dom.js", "identity.js", "whoami.js"])
def test_the_dashboard_keeps_no_copy_of_the_refusal_prose(name: str) -> None:
    source = (UI_DIR / name).read_text(encoding="utf-8")
    copied = [
        (refusal.name, text)
        for refusal in ROWS
        for text in (refusal.row.title, refusal.row.message, refusal.row.next_step)
        if text in source
    ]
    assert copied == []


@pytest.mark.parametrize("refusal", ROWS, ids=lambda r: f"{type(r).__name__}.{r.name}")
def test_every_refusal_renders_one_body_shape_and_a_sendable_close_frame(
    refusal: Denial | Rejection,
) -> None:
    body = json.loads(http_body(refusal))
    keys = {"error", "reason", "detail"} if refusal.row.body_reason else {"error", "detail"}
    assert set(body) == keys
    assert body["error"] == refusal.row.error and body["detail"]
    if refusal.row.body_reason:
        assert body["reason"] == refusal.metric_label
    code, reason = close_frame(refusal)
    assert 1000 <= code <= 4999 and code not in (1005, 1006, 1015)
    assert reason and len(reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES
    assert refusal.next_step.endswith(".")
    assert refusal.row.title and refusal.row.message


def test_an_answer_carries_its_status_json_and_no_store() -> None:
    status, headers, body = http_answer(Rejection.STORE_UNAVAILABLE, headers=((b"x-a", b"1"),))
    assert status == 503
    assert (b"content-type", b"application/json") in headers
    assert (b"cache-control", b"no-store") in headers and (b"x-a", b"1") in headers
    assert json.loads(body) == {
        "error": "unavailable",
        "reason": "store_unavailable",
        "detail": "The gateway cannot reach its pairing store right now; retry shortly.",
    }
    assert http_answer(Rejection.UPSTREAM_REFUSED, "x", status=403)[0] == 403


def test_a_close_reason_over_123_bytes_cannot_enter_the_table() -> None:
    with pytest.raises(ValueError, match="over 123 bytes"):
        Refusal(code="x", close_reason="é" * 62, title="t", message="m", next_step="n.")
