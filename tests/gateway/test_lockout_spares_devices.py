"""HTTP and the control socket during a lockout: the guesser is refused and told how long, every
paired device on its address keeps working, and an operator's unlock takes effect at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from edge import create_app
from tests.conftest import GATEWAY_TOKEN, REMOTE, Device, base_config, client_for, open_ws
from tests.gateway.test_http import pair_remote


@pytest.fixture
def strict(tmp_path: Path) -> Any:
    return create_app(
        base_config(tmp_path, auth={"rate_limit": {"failures": 3, "window": 60, "lockout": 120}})
    )


def test_guesses_are_told_the_tries_left_then_locked_out_while_a_paired_device_works(
    strict: Any,
) -> None:
    token = pair_remote(strict, Device("ops laptop"), role="admin")
    with client_for(strict, REMOTE) as client:
        bodies = [
            client.get("/api/devices", headers={"authorization": f"Bearer guess-{n}"})
            for n in range(3)
        ]
        assert [b.status_code for b in bodies] == [401, 401, 401]
        assert [b.json()["tries_left"] for b in bodies] == [2, 1, 0]
        assert "2 tries left" in bodies[0].json()["detail"]
        assert "locked out for" in bodies[2].json()["detail"]
        assert int(bodies[2].headers["retry-after"]) > 100
        locked = client.get("/api/devices", headers={"authorization": "Bearer guess-4"})
        assert locked.status_code == 401 and locked.json()["reason"] == "rate_limited"
        assert int(locked.headers["retry-after"]) > 100 and locked.json()["retry_after"] > 100
        # The same address with a valid device token: the lockout is not for it.
        paired = client.get("/api/devices", headers={"authorization": f"Bearer {token}"})
        assert paired.status_code == 200
        whoami = client.get("/api/whoami").json()
        assert whoami["attempts"]["triesLeft"] == 0 and whoami["attempts"]["lockedFor"] > 100


def refused(client: Any, auth: dict[str, str]) -> str:
    """The close reason a fresh device gets for ``auth``."""
    with open_ws(client) as ws:
        challenge = ws.receive_json()
        ws.send_text(json.dumps(Device().connect_frame(challenge["nonce"], auth)))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    return str(closed.value.reason)


def test_a_paired_device_reconnects_its_control_socket_during_a_lockout(strict: Any) -> None:
    device = Device("phone")
    token = pair_remote(strict, device)
    with client_for(strict, REMOTE) as client:
        for n in range(3):
            assert (
                refused(client, {"token": f"guess-{n}"}) == "unauthorized: gateway token mismatch"
            )
        assert refused(client, {"token": GATEWAY_TOKEN}) == "unauthorized: too many failed attempts"
        with open_ws(client) as ws:
            hello = device.handshake(ws, {"deviceToken": token})
        assert hello["type"] == "hello"
        # A guessed device token is still a guess: refused as locked out, not as invalid.
        assert (
            refused(client, {"deviceToken": "x" * 43}) == "unauthorized: too many failed attempts"
        )


def test_unlock_reaches_the_running_gateway_at_once(strict: Any) -> None:
    service = strict.state.gateway.service
    with client_for(strict, REMOTE) as client:
        for n in range(4):
            client.get("/api/devices", headers={"authorization": f"Bearer guess-{n}"})
        assert client.get("/api/whoami").json()["attempts"]["lockedFor"] > 0
        # What `edge auth unlock` does from another process: the store change and its event.
        service.store.unlock("203.0.113.7", actor="cli", now=service._clock())
        service.apply_events(service.events_after(service.latest_seq() - 1))
        again = client.get("/api/devices", headers={"authorization": "Bearer guess-5"})
        assert again.json()["reason"] == "device_token_invalid" and again.json()["tries_left"] == 2
