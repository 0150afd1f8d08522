"""Cookie-authenticated writes must come from the dashboard's own origin.

A browser attaches the session cookie to requests that pages of other origins
make; ``SameSite=Strict`` keeps out other sites only, not a sibling host name or
another port. Each condition of the cross-site check is refused on its own
here, the request that meets all of them goes through, and a Bearer call (the
CLI, scripts) is never asked for any of them.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import GATEWAY_TOKEN, REMOTE, Device, base_config, client_for, open_ws
from tests.gateway.test_http import pair_remote

OWN = "http://edge.example.com"
GOOD = {"origin": OWN, "sec-fetch-site": "same-origin", "content-type": "application/json"}


def pending_request(app: Any) -> str:
    """A fresh device asks to pair; the id of its pending request."""
    with client_for(app, ("198.51.100.20", 4000)) as client, open_ws(client) as ws:
        reply = Device().handshake(ws, {"token": GATEWAY_TOKEN}, role="user")
    assert reply["code"] == "PAIRING_REQUIRED"
    return str(reply["requestId"])


def admin_cookie_client(app: Any, device: Device) -> TestClient:
    token = pair_remote(app, device, "admin")
    client = client_for(app, REMOTE)
    response = client.post("/api/session", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200 and client.cookies.get("edge_session")
    return client


def still_pending(app: Any, request_id: str) -> bool:
    return any(r.id == request_id for r in app.state.gateway.service.list_requests())


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"origin": None}, "exactly one Origin header"),
        ({"origin": "http://wiki.example.com"}, "'http://wiki.example.com'"),
        ({"origin": "http://edge.example.com:8080"}, "not from the gateway's own origin"),
        ({"origin": "https://edge.example.com"}, "not from the gateway's own origin"),
        ({"origin": "null"}, "'null'"),
        ({"sec-fetch-site": "same-site"}, "Sec-Fetch-Site: 'same-site'"),
        ({"sec-fetch-site": "cross-site"}, "Sec-Fetch-Site: 'cross-site'"),
        ({"content-type": "text/plain"}, "application/json (got 'text/plain')"),
        ({"content-type": "application/x-www-form-urlencoded"}, "Content-Type"),
        ({"content-type": None}, "(got 'none')"),
    ],
    ids=lambda v: str(v),
)
def test_each_cross_site_condition_refuses_a_cookie_write(
    app: Any, device: Device, change: dict[str, str | None], says: str
) -> None:
    request_id = pending_request(app)
    headers = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with admin_cookie_client(app, device) as client:
        response = client.post(
            f"/api/requests/{request_id}/approve", content=b'{"role": "admin"}', headers=headers
        )
    assert response.status_code == 403
    body = response.json()
    assert set(body) == {"error", "reason", "detail"}
    assert (body["error"], body["reason"]) == ("forbidden", "cross_site_write")
    assert says in body["detail"]
    assert "Authorization: Bearer" in body["detail"]  # tells what to do instead
    assert still_pending(app, request_id)


def test_a_text_plain_body_is_never_read_as_json(app: Any, device: Device) -> None:
    """The classic form CSRF: ``enctype=text/plain`` smuggles a JSON-looking body."""
    request_id = pending_request(app)
    headers = {**GOOD, "content-type": "text/plain;charset=UTF-8"}
    with admin_cookie_client(app, device) as client:
        response = client.post(
            f"/api/requests/{request_id}/approve", content=b'{"role":"admin"}', headers=headers
        )
    assert response.status_code == 403
    assert still_pending(app, request_id)


def test_a_same_origin_json_write_with_the_cookie_goes_through(app: Any, device: Device) -> None:
    request_id = pending_request(app)
    with admin_cookie_client(app, device) as client:
        response = client.post(
            f"/api/requests/{request_id}/approve", content=b'{"role": "user"}', headers=GOOD
        )
    assert response.status_code == 200, response.text
    assert not still_pending(app, request_id)


def test_sec_fetch_site_none_and_a_missing_one_are_accepted(app: Any, device: Device) -> None:
    with admin_cookie_client(app, device) as client:
        for fetch_site in ("none", None):
            headers = {k: v for k, v in GOOD.items() if k != "sec-fetch-site"}
            if fetch_site:
                headers["sec-fetch-site"] = fetch_site
            rid = pending_request(app)
            response = client.post(f"/api/requests/{rid}/reject", headers=headers)
            assert response.status_code == 200, response.text


def test_an_allowed_origin_may_write_with_the_cookie(tmp_path: Any, device: Device) -> None:
    from edge import create_app

    config = base_config(tmp_path)
    config["auth"]["allowed_origins"] = ["https://admin.example.net"]
    app = create_app(config)
    with admin_cookie_client(app, device) as client:
        rid = pending_request(app)
        headers = {**GOOD, "origin": "https://admin.example.net"}
        assert client.post(f"/api/requests/{rid}/reject", headers=headers).status_code == 200
        rid = pending_request(app)
        headers = {**GOOD, "origin": "https://other.example.net"}
        assert client.post(f"/api/requests/{rid}/reject", headers=headers).status_code == 403


def test_bearer_writes_need_no_origin_nor_json(app: Any, device: Device) -> None:
    token = pair_remote(app, device, "admin")
    request_id = pending_request(app)
    with client_for(app, REMOTE) as client:
        response = client.post(
            f"/api/requests/{request_id}/reject",
            headers={"authorization": f"Bearer {token}", "content-type": "text/plain"},
        )
    assert response.status_code == 200
    assert not still_pending(app, request_id)


def test_a_bearer_header_beside_a_cookie_is_judged_as_bearer(app: Any, device: Device) -> None:
    """A page of another site cannot set Authorization, so its presence is no cross-site sign."""
    token = pair_remote(app, Device(), "admin")
    with admin_cookie_client(app, device) as client:
        rid = pending_request(app)
        response = client.post(
            f"/api/requests/{rid}/reject", headers={"authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200


def test_cookie_reads_are_not_asked_for_an_origin(app: Any, device: Device) -> None:
    with admin_cookie_client(app, device) as client:
        assert client.get("/api/devices").status_code == 200


def test_refusals_are_counted(app: Any, device: Device) -> None:
    with admin_cookie_client(app, device) as client:
        rid = pending_request(app)
        client.post(f"/api/requests/{rid}/reject", headers={"origin": "http://wiki.example.com"})
    rendered = app.state.gateway.metrics.render()[0].decode()
    assert 'edge_auth_failures_total{reason="cross_site_write"} 1.0' in rendered
