"""Lockouts and caps through the real app (issue 14, attacks 5 and 6).

The service-level pins, on both stores, are in
``tests/pairing/test_pairing_client_keys.py``; these show the guard and the
control socket use the same key, and that a local client is never locked out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from edge import create_app
from edge.config import ConfigError, load_settings
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, Device, base_config, client_for, open_ws
from tests.gateway.test_ws import closed_with

SUBNET = "2001:db8:7:9"
LOCAL_URL = "http://localhost:18789"
REBINDING_URL = "http://rebind.attacker.example:18789"  # same 127.0.0.1, a foreign Host


def _guess(
    app: Any, address: tuple[str, int], token: str, base_url: str = "http://edge.example.com"
) -> Any:
    client = TestClient(app, client=address, base_url=base_url)
    return client.get("/api/devices", headers={"authorization": f"Bearer {token}"})


def test_bearer_guesses_rotating_inside_one_64_are_locked_out(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path, auth={"rate_limit": {"failures": 10}}))
    with client_for(app):
        reasons = [
            _guess(app, (f"{SUBNET}:{n:x}::{n + 1:x}", 40000 + n), f"guess-{n}").json()["reason"]
            for n in range(60)
        ]
        other = _guess(app, ("2001:db8:7:a::1", 1), "guess").json()["reason"]
    assert reasons[:10] == ["device_token_invalid"] * 10
    assert reasons[10:] == ["rate_limited"] * 50
    assert other == "device_token_invalid"


def test_ipv6_prefix_setting_widens_the_key(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path, auth={"rate_limit": {"failures": 3, "ipv6_prefix": 48}}))
    with client_for(app):
        for n in range(3):
            _guess(app, (f"2001:db8:7:{n:x}::1", 1), "guess")
        assert _guess(app, ("2001:db8:7:ffff::1", 1), "guess").json()["reason"] == "rate_limited"
        assert _guess(app, ("2001:db8:8::1", 1), "guess").json()["reason"] == (
            "device_token_invalid"
        )


@pytest.mark.parametrize("prefix", [0, 16, 31, 129, "64", True, None])
def test_ipv6_prefix_out_of_range_is_a_config_error_naming_the_key(
    tmp_path: Path, prefix: object
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(base_config(tmp_path, auth={"rate_limit": {"ipv6_prefix": prefix}}))
    (problem,) = info.value.problems
    assert problem.startswith("auth.rate_limit.ipv6_prefix: ")
    assert "from 32 to 128" in problem


def test_unauthenticated_socket_cap_counts_one_64_as_one_client(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path, pairing={"max_unauthenticated_sockets_per_client": 2}))
    first = client_for(app, (f"{SUBNET}::1", 1))
    second = client_for(app, (f"{SUBNET}::2", 2))
    third = client_for(app, (f"{SUBNET}::3", 3))
    elsewhere = client_for(app, ("2001:db8:99::1", 4))
    with first, open_ws(first) as a, open_ws(second) as b:
        a.receive_json()
        b.receive_json()
        with open_ws(third) as c:
            assert closed_with(c) == (1008, "unauthorized: too many failed attempts")
        with open_ws(elsewhere) as d:
            assert d.receive_json()["type"] == "challenge"


def test_local_client_sending_bad_tokens_stays_local_and_unlocked(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path, auth={"rate_limit": {"failures": 3}}))
    with client_for(app, LOOPBACK, LOCAL_URL) as local:
        for n in range(10):
            response = local.get("/api/devices", headers={"authorization": f"Bearer bad-{n}"})
            assert response.status_code == 200
        whoami = local.get("/api/whoami", headers={"authorization": "Bearer bad"}).json()
    assert whoami["local"] is True
    assert whoami["auth"]["state"] == "local"
    assert app.state.gateway.service.lockout_remaining("127.0.0.1") == 0.0


def test_rebinding_page_guesses_do_not_lock_the_local_dashboard_out(tmp_path: Path) -> None:
    """Same browser, same 127.0.0.1: the page's guesses lock the page, not the operator."""
    app = create_app(base_config(tmp_path, auth={"rate_limit": {"failures": 3}}))
    rebinding = client_for(app, LOOPBACK, REBINDING_URL)
    with client_for(app, LOOPBACK, LOCAL_URL) as local:
        for n in range(5):
            _guess(app, LOOPBACK, f"guess-{n}", REBINDING_URL)
        locked = rebinding.get("/api/devices", headers={"authorization": "Bearer guess"})
        assert locked.json()["reason"] == "rate_limited"
        assert local.get("/api/devices").status_code == 200
        with open_ws(local) as ws:
            hello = Device("operator").handshake(ws, {}, "admin")
    assert hello["type"] == "hello"
    assert hello["client"]["local"] is True
    assert hello["device"]["role"] == "admin"


def test_rebinding_page_socket_guesses_do_not_lock_the_local_socket_out(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path, auth={"rate_limit": {"failures": 3}}))
    with client_for(app, LOOPBACK, LOCAL_URL) as local:
        rebinding = client_for(app, LOOPBACK, REBINDING_URL)
        for n in range(4):
            with open_ws(rebinding) as ws:
                challenge = ws.receive_json()
                frame = Device().connect_frame(challenge["nonce"], {"token": f"guess-{n}"})
                ws.send_text(json.dumps(frame))
                closed = closed_with(ws)
        assert closed == (1008, "unauthorized: too many failed attempts")
        with open_ws(local) as ws:
            hello = Device("operator").handshake(ws, {"token": GATEWAY_TOKEN}, "admin")
    assert hello["type"] == "hello" and hello["client"]["local"] is True
