"""A reload re-reads allowed origins, the gateway token and trusted proxies from the file.

``edge gateway reload`` sends SIGHUP, whose handler calls ``Gateway.reload``;
the integration tests drive the signal against ``edge serve`` (trusted
proxies, live sockets kept). Here the same call is made in process, so every
reloaded setting is checked on the next handshake and request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge import create_app
from edge.config import ConfigError
from tests.conftest import GATEWAY_TOKEN, Device, base_config, client_for, logged, open_ws
from tests.gateway.test_ws import attempt, closed_with, refused

NEW_TOKEN = "reloaded-gateway-token-0123456789abcdefghijklm"
OPS_ORIGIN = "https://ops.example.com"


def write(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "edge.yaml"
    write(path, base_config(tmp_path))
    return path


def test_reload_applies_new_allowed_origins_and_gateway_token(
    config_file: Path, tmp_path: Path
) -> None:
    app = create_app(config_file)
    device = Device()
    with client_for(app) as client, open_ws(client, {"origin": OPS_ORIGIN}) as ws:
        assert closed_with(ws) == (1008, "origin not allowed")

    write(
        config_file,
        base_config(tmp_path, auth={"token": NEW_TOKEN, "allowed_origins": [OPS_ORIGIN]}),
    )
    changed = app.state.gateway.reload()
    assert set(changed) == {"auth.allowed_origins", "gateway token"}

    reply, close = attempt(app, device, {"token": NEW_TOKEN}, headers={"origin": OPS_ORIGIN})
    assert reply["code"] == "PAIRING_REQUIRED" and close == (1008, "pairing required")
    assert refused(app, Device(), {"token": GATEWAY_TOKEN}) == (
        1008,
        "unauthorized: gateway token mismatch",
    )


def test_reload_applies_new_trusted_proxies_to_the_next_request(
    config_file: Path, tmp_path: Path
) -> None:
    app = create_app(config_file)
    with client_for(app, ("10.0.0.1", 5000)) as client:
        before = client.get("/api/whoami", headers={"x-forwarded-for": "198.51.100.4"}).json()
        assert before["client"]["ip"] == "10.0.0.1"
        assert before["anomalies"] == ["untrusted_proxy_headers"]

        write(config_file, base_config(tmp_path, proxy={"trusted_proxies": ["10.0.0.1"]}))
        assert app.state.gateway.reload() == ["proxy"]

        after = client.get("/api/whoami", headers={"x-forwarded-for": "198.51.100.4"}).json()
        assert after["client"]["ip"] == "198.51.100.4" and after["anomalies"] == []


def test_a_bad_file_is_refused_and_the_running_configuration_stays(
    config_file: Path, tmp_path: Path
) -> None:
    app = create_app(config_file)
    config_file.write_text("proxy:\n  trusted_proxies: [10.0.0.5/24]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        app.state.gateway.reload()
    assert any("proxy.trusted_proxies[0]" in problem for problem in caught.value.problems)
    reply, close = attempt(app, Device(), {"token": GATEWAY_TOKEN})
    assert reply["code"] == "PAIRING_REQUIRED" and close == (1008, "pairing required")


def test_moving_metrics_by_reload_waits_for_a_restart_and_says_so(
    config_file: Path, tmp_path: Path
) -> None:
    app = create_app(config_file)
    write(config_file, base_config(tmp_path, metrics={"port": 9464}))
    with logged("edge.gateway") as log:
        assert app.state.gateway.reload() == ["metrics"]
    assert any("take effect at the next start" in message for message in log.messages)
    with client_for(app, ("127.0.0.1", 5000), "http://localhost") as local:
        assert local.get("/metrics").status_code == 200  # still served where it was
