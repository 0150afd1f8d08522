"""The socket hub delivers a batch of store events whole, whatever one of its reads does."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from edge import create_app
from edge.pairing.models import Event, Role
from edge.pairing.store import StoreError
from tests.conftest import Device, base_config, client_for, logged, open_ws


def _closed(ws: Any) -> tuple[int, str]:
    """The close code and reason, reading past any event frames sent first."""
    with pytest.raises(WebSocketDisconnect) as closed:
        for _ in range(20):
            ws.receive_json()
    return closed.value.code, closed.value.reason


async def _settle(hub: Any) -> None:
    """Until every task the hub spawned for a batch has finished."""
    while pending := [task for task in hub._background if not task.done()]:
        await asyncio.gather(*pending, return_exceptions=True)


def test_a_failing_device_read_mid_batch_still_closes_every_other_revoked_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(base_config(tmp_path))
    gateway = app.state.gateway
    first, renamed, last = Device("first"), Device("renamed"), Device("last")
    with client_for(app) as client:
        codes = [
            gateway.service.create_invite(role=Role.USER, name=None, ttl=600, actor="test")[1]
            for _ in range(3)
        ]
        with open_ws(client) as first_ws, open_ws(client) as renamed_ws, open_ws(client) as last_ws:
            for device, ws, code in zip(
                (first, renamed, last), (first_ws, renamed_ws, last_ws), codes, strict=True
            ):
                assert device.handshake(ws, {"invite": code})["type"] == "hello"
            read = gateway.store.get_device

            def get_device(device_id: str) -> Any:
                if device_id == renamed.id:
                    raise StoreError("the pairing store is unreachable")
                return read(device_id)

            monkeypatch.setattr(gateway.store, "get_device", get_device)
            now = time.time()
            batch = [
                Event(1_000_001, "device.revoked", {"device_id": first.id}, now),
                Event(1_000_002, "device.renamed", {"device_id": renamed.id}, now),
                Event(1_000_003, "device.revoked", {"device_id": last.id}, now),
            ]
            with logged("edge.ws") as records:
                client.portal.call(gateway.hub.deliver, batch)
                assert _closed(first_ws) == (1008, "device revoked")
                assert _closed(last_ws) == (1008, "device revoked")
                # The device whose read failed keeps its socket and the device it had.
                renamed_ws.send_text(json.dumps({"type": "req", "id": 1, "method": "self.whoami"}))
                while (reply := renamed_ws.receive_json())["type"] != "res":
                    pass
                # The failed refresh is logged from its own task, which may finish after
                # the reply: wait for that task to run rather than for a time.
                client.portal.call(_settle, gateway.hub)
            assert reply["ok"] and reply["result"]["id"] == renamed.id
            assert any(renamed.id[:12] in message for message in records.messages)
