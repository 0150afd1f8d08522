"""Authority is positive: "no device" never means "local" (issue 14, attack 3).

The attack: ``metrics.path: /api/invites`` passed ``edge config check``; the
guard waved that path through without authenticating, and the invite handler
took the missing device for a local operator, so an anonymous client minted an
admin invite. Two defences, each pinned on its own: the configuration is
refused at load, and the admin layer refuses any caller whose resolved state
is not local, whether or not the guard ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from edge.app import build_gateway
from edge.cli import main
from edge.config import ConfigError, load_settings
from edge.gateway.api import build_routes
from edge.gateway.guard import ClientResolutionMiddleware
from tests.conftest import LOOPBACK, REMOTE, base_config

SHADOWING_PATHS = [
    "/api/invites",
    "/api/devices",
    "/api/requests/X/approve",
    "/api",
    "/api/",
    "/",
    "/ws",
    "/ui/",
    "/ui/app.js",
    "/auth/nginx",
    "/healthz",
    "/readyz",
    "/favicon.ico",
]


@pytest.mark.parametrize("path", SHADOWING_PATHS)
def test_metrics_path_on_a_served_path_is_refused_at_load(tmp_path: Path, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(base_config(tmp_path, metrics={"path": path}), environ={})
    (problem,) = info.value.problems
    assert problem.startswith(f"metrics.path: {path!r} ")
    assert "use a path of its own" in problem


def test_metrics_path_under_an_upstream_prefix_names_the_upstream(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        metrics={"path": "/app/metrics"},
        upstreams=[{"prefix": "/app/", "url": "http://127.0.0.1:3000", "share_control_origin": True}],
    )
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert info.value.problems == [
        "metrics.path: '/app/metrics' is under upstreams[0].prefix '/app/'; the guard lets the "
        "metrics path through without a device, so it must not share a path with anything "
        "else (use a path of its own such as '/metrics')"
    ]


def test_metrics_path_of_its_own_is_accepted(tmp_path: Path) -> None:
    for path in ("/metrics", "/internal/metrics", "/wsx", "/healthz-metrics"):
        assert load_settings(base_config(tmp_path, metrics={"path": path})).metrics.path == path


def test_config_check_refuses_the_shadowing_metrics_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "data", "metrics": {"path": "/api/invites"}}))
    code = main(["config", "check", "-c", str(config)])
    _, err = capsys.readouterr()
    assert code == 2
    assert "metrics.path: '/api/invites' is equal to or under /api" in err
    assert "Traceback" not in err


def _handlers_without_the_guard(tmp_path: Path) -> Starlette:
    """The real management routes behind client resolution only: a guard gap, on purpose."""
    settings = load_settings(base_config(tmp_path), environ={})
    gateway = build_gateway(settings)
    routes = build_routes(
        settings=settings,
        live=gateway.live,
        service=gateway.service,
        health=gateway.health,
        metrics=gateway.metrics,
        blocking=gateway.blocking,
        diagnostics=gateway.diagnostics,
    )
    resolution = Middleware(
        ClientResolutionMiddleware,
        live=gateway.live,
        metrics=gateway.metrics,
        warner=gateway.warner,
    )
    return Starlette(routes=routes, middleware=[resolution])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/invites"),
        ("GET", "/api/invites"),
        ("GET", "/api/devices"),
        ("POST", "/api/devices/abcdef012345/revoke"),
        ("POST", "/api/requests/K7QF-2M9D/approve"),
    ],
)
def test_anonymous_caller_reaching_an_admin_handler_is_refused(
    tmp_path: Path, method: str, path: str
) -> None:
    app = _handlers_without_the_guard(tmp_path)
    with TestClient(app, client=REMOTE, base_url="http://edge.example.com") as client:
        response = client.request(method, path, json={"role": "admin"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "paired admin device" in response.json()["detail"]


def test_loopback_address_alone_is_no_authority_without_the_guard(tmp_path: Path) -> None:
    """Even a loopback peer is anonymous to a handler when nothing resolved it as local."""
    app = _handlers_without_the_guard(tmp_path)
    with TestClient(app, client=LOOPBACK, base_url="http://127.0.0.1:18789") as client:
        response = client.post("/api/invites", json={"role": "admin"})
    assert response.status_code == 401


def test_anonymous_client_cannot_mint_an_invite_through_the_full_app(app: Any) -> None:
    from tests.conftest import client_for

    with client_for(app, REMOTE) as client:
        response = client.post("/api/invites", json={"role": "admin"})
        listed = client.get("/api/invites")
    assert response.status_code == 401
    assert listed.status_code == 401
