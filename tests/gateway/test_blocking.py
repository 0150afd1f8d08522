"""The blocking door: what goes through it, and what must not pay for it."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge import create_app
from edge.gateway.blocking import Blocking
from edge.pairing.models import Role
from tests.conftest import Device, base_config, client_for, open_ws


def test_calls_run_in_the_pool_with_the_callers_context() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    door = Blocking(2)

    def where() -> tuple[str, str]:
        return threading.current_thread().name, request_id.get()

    async def main() -> tuple[str, str]:
        request_id.set("r-1")
        return await door.run(where)

    try:
        thread, seen = asyncio.run(main())
    finally:
        door.close()
    assert thread.startswith("edge-blocking")
    assert seen == "r-1"


def test_a_closed_door_opens_again_for_the_next_start() -> None:
    door = Blocking(1)
    assert asyncio.run(door.run(lambda: 1)) == 1
    door.close()
    assert asyncio.run(door.run(lambda: 2)) == 2
    door.close()


def test_a_cached_bearer_token_is_checked_without_a_thread_hop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(base_config(tmp_path))
    gateway = app.state.gateway
    device = Device("phone")
    calls: list[Callable[..., Any]] = []
    run = gateway.blocking.run

    async def counted(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await run(func, *args, **kwargs)

    with client_for(app) as client:
        code = gateway.service.create_invite(role=Role.USER, name=None, ttl=600, actor="test")[1]
        with open_ws(client) as ws:
            assert device.handshake(ws, {"invite": code})["type"] == "hello"
            # Events about a device clear its cached token when they arrive; once the
            # device's own socket has this later one, every earlier one was applied.
            gateway.service.rename(device.id, "phone 2", actor="test")
            while ws.receive_json().get("event") != "device.renamed":
                pass
        bearer = {"authorization": f"Bearer {device.token}"}
        assert client.get("/api/whoami", headers=bearer).json()["auth"]["state"] == "paired"
        monkeypatch.setattr(gateway.blocking, "run", counted)
        for _ in range(3):
            assert client.get("/api/whoami", headers=bearer).json()["auth"]["state"] == "paired"
        assert calls == []
        unknown = {"authorization": "Bearer not-a-device-token"}
        assert client.get("/api/whoami", headers=unknown).json()["auth"]["state"] == "anonymous"
        assert len(calls) == 1  # the miss: one trip through the door for the whole decision
