"""Live control sockets: who is connected, the per-address cap, and event fan-out.

Every event from the store log (this worker, other workers, replicas, the
CLI) comes through ``deliver``: admin sockets receive it, and a revoked or
expired device's sockets are closed with 1008 ``device revoked``. ``deliver``
runs on the event loop and does no I/O: the device a rename or a user change
refreshes is read through the blocking door in a task of its own, so a slow or
failing read delays that refresh only, never the rest of the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Gauge
from starlette.websockets import WebSocket, WebSocketState

from edge.gateway.blocking import Blocking
from edge.pairing.models import Device, Event, Role
from edge.pairing.store import Store
from edge.refusals import AnyRefusal, Denial, Rejection, close_frame
from edge.serialize import event_frame

logger = logging.getLogger("edge.ws")

_CLOSING_EVENTS = frozenset({"device.revoked", "device.expired"})
# Changes a live socket's cached device must pick up (what upstream sockets assert).
_REFRESHING_EVENTS = frozenset({"device.renamed", "device.user_assigned"})


class ControlConnection:
    """One accepted control socket; sends are serialised by a lock."""

    __slots__ = ("_lock", "cap_key", "client_ip", "closed", "device", "local", "websocket")

    def __init__(self, websocket: WebSocket, client_ip: str | None, local: bool) -> None:
        self.websocket = websocket
        self.client_ip = client_ip
        self.local = local
        # The unauthenticated-socket cap's key (``try_open``); None: not counted.
        self.cap_key: str | None = None
        self.device: Device | None = None
        self.closed = False
        self._lock = asyncio.Lock()

    def device_id_or_none(self) -> str | None:
        return self.device.id if self.device is not None else None

    @property
    def is_admin(self) -> bool:
        return self.device is not None and self.device.role == Role.ADMIN

    async def send_json(self, payload: dict[str, Any]) -> None:
        if self.closed:
            return
        async with self._lock:
            if self.websocket.application_state != WebSocketState.CONNECTED:
                return
            try:
                await self.websocket.send_text(json.dumps(payload, separators=(",", ":")))
            except Exception:
                self.closed = True

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        async with self._lock:
            if self.websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.websocket.close(code, reason)

    async def deny(self, refusal: AnyRefusal) -> None:
        """Close with the refusal's code and reason (``edge.refusals`` owns both)."""
        await self.close(*close_frame(refusal))


class SocketHub:
    """The control sockets of this worker, by device; ``dispatch`` fans store events out.

    ``client_key`` is the lockout's key function (``PairingService.client_key``);
    ``store`` is read (``get_device``) only through ``blocking``.
    """

    def __init__(
        self,
        *,
        client_key: Callable[[str | None], str],
        store: Store,
        blocking: Blocking,
        gauge: Gauge,
    ) -> None:
        self._client_key = client_key
        self._store = store
        self._blocking = blocking
        self._gauge = gauge
        self._unauthenticated: dict[str, int] = defaultdict(int)
        self._by_device: dict[str, set[ControlConnection]] = defaultdict(set)
        self._all: set[ControlConnection] = set()
        self._background: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._all)

    # -- unauthenticated sockets -------------------------------------------------------

    def try_open(self, conn: ControlConnection, cap: int) -> bool:
        """Count a new unauthenticated socket; False when its client has ``cap`` already.

        The client is the lockout's key (IPv4 address, IPv6 prefix), so a /64
        cannot open ``cap`` sockets per address. Local clients are not counted:
        like the lockout, the cap must not let a page that shares 127.0.0.1
        (DNS rebinding) crowd the operator's own dashboard out.
        """
        if not conn.local:
            key = self._client_key(conn.client_ip)
            if self._unauthenticated[key] >= cap:
                return False
            self._unauthenticated[key] += 1
            conn.cap_key = key
        self._all.add(conn)
        self._gauge.inc()
        return True

    def _release_unauthenticated(self, conn: ControlConnection) -> None:
        key = conn.cap_key
        if key is None:
            return
        conn.cap_key = None
        count = self._unauthenticated.get(key, 0) - 1
        if count > 0:
            self._unauthenticated[key] = count
        else:
            self._unauthenticated.pop(key, None)

    def admit(self, conn: ControlConnection, device: Device) -> None:
        self._release_unauthenticated(conn)
        conn.device = device
        self._by_device[device.id].add(conn)

    def forget(self, conn: ControlConnection) -> None:
        if conn not in self._all:
            return
        self._all.discard(conn)
        self._gauge.dec()
        if conn.device is None:
            self._release_unauthenticated(conn)
            return
        peers = self._by_device.get(conn.device.id)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self._by_device[conn.device.id]

    def touch_connected(self, touch: Callable[[str, str | None], None]) -> None:
        """Note each device with an open control socket here as seen now (``service.touch``).

        A socket sends nothing while its dashboard sits open, so without this
        the device in use would look idle, and ``pairing.device_idle_expiry``
        could remove it under its own open socket. ``touch`` only notes in
        memory; the store is written in throttled batches.
        """
        for device_id, peers in list(self._by_device.items()):
            for conn in list(peers)[:1]:
                touch(device_id, conn.client_ip)

    # -- events -------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def deliver(self, events: Sequence[Event]) -> None:
        for event in events:
            device_id = event.data.get("device_id")
            if event.type in _CLOSING_EVENTS and isinstance(device_id, str):
                for conn in list(self._by_device.get(device_id, ())):
                    self._spawn(conn.deny(Denial.DEVICE_REVOKED))
            if (
                event.type in _REFRESHING_EVENTS
                and isinstance(device_id, str)
                and device_id in self._by_device
            ):
                self._spawn(self._refresh_devices(device_id))
            frame = event_frame(event)
            for peers in self._by_device.values():
                for conn in peers:
                    if conn.is_admin or device_id == conn.device_id_or_none():
                        self._spawn(conn.send_json(frame))

    async def _refresh_devices(self, device_id: str) -> None:
        """Give the device's live sockets its new name or user (what upstream sockets assert)."""
        try:
            device = await self._blocking.run(self._store.get_device, device_id)
        except Exception as exc:  # the store is down: the sockets keep the device they had
            logger.error("could not refresh device %s for its sockets: %s", device_id[:12], exc)
            return
        if device is None:
            return
        for conn in self._by_device.get(device_id, ()):
            conn.device = device

    async def shutdown(self) -> None:
        """Close every socket with 1012 so clients reconnect to the next process."""
        conns = list(self._all)
        await asyncio.gather(
            *(c.deny(Rejection.SERVER_RESTARTING) for c in conns), return_exceptions=True
        )
