"""The OpenAPI document against the app it describes, both ways, and against real answers.

Every HTTP route ``create_app`` registers is in the document with its methods,
and every documented operation is served: a request to it reaches a handler
(never the router's 404 or 405) and answers one of the statuses documented
for it. Three kinds of route are left out on purpose: upstream forwarding
(``UpstreamRoute``: those paths and hosts are the operator's apps, not Edge's
API), the dashboard's static files (the ``/ui`` mount: files, not operations)
and the control WebSocket (``/ws``: not an HTTP operation).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.routing import Mount, Route, WebSocketRoute

from edge.app import create_app
from edge.config import Settings
from edge.gateway.guard import PUBLIC_EXACT
from edge.gateway.openapi import (
    MEDIA_TYPE,
    OPENAPI_PATH,
    build_document,
    operations,
    render_markdown,
)
from edge.gateway.openapi_schemas import ACCESS_LABELS
from edge.gateway.upstream import UpstreamRoute
from tests.conftest import LOOPBACK, REMOTE, Device, base_config, client_for
from tests.gateway.test_http import pair_remote

DOCS = Path(__file__).resolve().parents[2] / "docs"
LOCAL_URL = "http://localhost:18789"
# Well-formed ids that name nothing, so the handler answers its own 404.
FILLERS = {"{rid}": "K7QF-2M9D", "{did}": "abcdef012345", "{iid}": "K7QF-2M9D"}


def _settings(app: Any) -> Settings:
    settings: Settings = app.state.gateway.live.settings
    return settings


def _app_routes(app: Any) -> dict[str, set[str]]:
    """Path -> methods of every HTTP route of Edge's own, HEAD left out (every GET has it)."""
    found: dict[str, set[str]] = {}
    for route in app.router.routes:
        if isinstance(route, UpstreamRoute | WebSocketRoute):
            continue
        if isinstance(route, Mount):
            assert route.path == "/ui", f"an unexpected mount {route.path!r} needs documenting"
            continue
        assert isinstance(route, Route), f"an unknown kind of route: {route!r}"
        assert route.methods is not None
        found.setdefault(route.path, set()).update(route.methods - {"HEAD"})
    return found


def _documented(document: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for method, path, _ in operations(document):
        found.setdefault(path, set()).add(method)
    return found


def _validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def _check(document: dict[str, Any], name: str, body: Any) -> None:
    errors = [e.message for e in _validator(document, name).iter_errors(body)]
    assert errors == [], f"{name}: {errors}"


@pytest.fixture
def upstream_app(tmp_path: Path) -> Any:
    """An app with an upstream on a prefix and one on a host of its own: routes to leave out."""
    config = base_config(
        tmp_path,
        upstreams=[
            {"prefix": "/app/", "url": "http://127.0.0.1:9", "share_control_origin": True},
            {"host": "app.example.com", "url": "http://127.0.0.1:9"},
        ],
    )
    return create_app(config)


def test_the_document_is_valid_openapi_3_1(app: Any) -> None:
    document = build_document(_settings(app))
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_of_the_app_is_documented_with_its_methods(upstream_app: Any) -> None:
    assert any(isinstance(r, UpstreamRoute) for r in upstream_app.router.routes)
    document = build_document(_settings(upstream_app))
    assert _documented(document) == _app_routes(upstream_app)


def test_the_metrics_route_is_documented_where_the_settings_put_it(tmp_path: Path) -> None:
    moved = create_app(base_config(tmp_path, metrics={"path": "/internal/metrics"}))
    document = build_document(_settings(moved))
    assert "/internal/metrics" in document["paths"] and "/metrics" not in document["paths"]
    assert _documented(document) == _app_routes(moved)
    elsewhere = create_app(base_config(tmp_path, metrics={"port": 9464}))
    document = build_document(_settings(elsewhere))
    assert not any("metrics" in path for path in document["paths"])
    assert _documented(document) == _app_routes(elsewhere)


def test_every_documented_operation_is_served_and_answers_a_documented_status(app: Any) -> None:
    document = build_document(_settings(app))
    with client_for(app, LOOPBACK, base_url=LOCAL_URL) as client:
        for method, path, operation in operations(document):
            url = path
            for placeholder, value in FILLERS.items():
                url = url.replace(placeholder, value)
            kwargs: dict[str, Any] = {}
            if "requestBody" in operation:
                kwargs["json"] = {}
            response = client.request(method, url, **kwargs)
            where = f"{method} {path}: {response.status_code} {response.text[:200]}"
            # A local client passes the guard: the answer is the handler's own.
            assert response.status_code not in (401, 405), where
            if response.status_code == 404:
                # A handler's "no such request/device/invite", never the router's plain 404.
                assert response.json()["reason"] == "not_found", where
            assert str(response.status_code) in operation["responses"], where
            # The documented X-Request-ID is on the answer, as the document says of each.
            assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), where
            documented = operation["responses"][str(response.status_code)]
            assert documented["headers"]["X-Request-ID"] == {
                "$ref": "#/components/headers/RequestId"
            }, where
            assert {"$ref": "#/components/parameters/RequestId"} in operation["parameters"], where


def test_the_document_is_served_publicly_as_built(app: Any) -> None:
    assert OPENAPI_PATH in PUBLIC_EXACT
    with client_for(app, REMOTE) as client:
        response = client.get(OPENAPI_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPE
    assert json.loads(response.content) == build_document(_settings(app))


def test_every_operation_says_who_may_call_it_as_the_guard_decides(app: Any) -> None:
    for method, path, operation in operations(build_document(_settings(app))):
        access = operation["x-edge-access"]
        assert access in ACCESS_LABELS, (method, path)
        assert (access == "public") == (path in PUBLIC_EXACT), (method, path)
        if access == "admin":
            assert path.startswith(("/api/devices", "/api/requests", "/api/invites"))
        if access in ("user", "admin"):
            assert "401" in operation["responses"] and "503" in operation["responses"]
            if method != "GET":
                assert "403" in operation["responses"], (method, path)


def test_answers_match_the_documented_schemas(app: Any) -> None:
    document = build_document(_settings(app))
    admin = Device("admin")
    token = pair_remote(app, admin, "admin")
    bearer = {"authorization": f"Bearer {token}"}
    with client_for(app, REMOTE) as client:
        _check(document, "Whoami", client.get("/api/whoami").json())
        _check(document, "Whoami", client.get("/api/whoami", headers=bearer).json())
        _check(document, "RefusalTable", client.get("/api/refusals").json())
        _check(document, "Health", client.get("/readyz").json())
        refused = client.get("/api/devices")
        assert refused.status_code == 401
        _check(document, "Error", refused.json())
        created = client.post("/api/invites", headers=bearer, json={"name": "laptop"})
        assert created.status_code == 200
        _check(document, "CreatedInvite", created.json())
        listed = client.get("/api/devices", headers=bearer)
        assert listed.status_code == 200
        _check(document, "DeviceList", listed.json())
        assert listed.json()["devices"] and listed.json()["invites"]
        missing = client.post("/api/devices/abcdef012345/revoke", headers=bearer)
        assert missing.status_code == 404, missing.text
        _check(document, "Error", missing.json())
        session = client.post("/api/session", headers=bearer)
        assert session.status_code == 200
        _check(document, "Session", session.json())
    with client_for(app, LOOPBACK, base_url=LOCAL_URL) as client:
        whoami = client.get("/api/whoami").json()
        assert whoami["auth"]["state"] == "local"
        _check(document, "Whoami", client.get("/api/whoami").json())


def test_docs_api_md_is_rendered_from_the_document() -> None:
    document = build_document(Settings())
    text = (DOCS / "api.md").read_text()
    assert text == render_markdown(document), "re-render: python -m edge.gateway.openapi"
    rows = [line for line in text.splitlines() if re.match(r"\| [A-Z]+ \| `", line)]
    expected = [
        f"| {method} | `{path}` | {ACCESS_LABELS[op['x-edge-access']]} | {op['summary']} |"
        for method, path, op in operations(document)
    ]
    assert rows == expected
    assert "(api.md)" in (DOCS / "README.md").read_text()
