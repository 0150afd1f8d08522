"""The control WebSocket ``/ws``: origin check, challenge, connect, hello, then requests.

Every refusal is accepted first and then closed with 1008 and the contract's
reason, because a close before ``accept`` reaches the client as a bare HTTP
403 and the operator would never learn why.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import secrets
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from edge.gateway.admin import AdminError, call_admin_method
from edge.gateway.blocking import Blocking
from edge.gateway.context import AuthState, resolution_of
from edge.gateway.forwarding.headers import session_token
from edge.gateway.live import Live
from edge.gateway.origins import origin_allowed
from edge.gateway.protocol import (
    MAX_FRAME_AFTER_HELLO,
    MAX_FRAME_BEFORE_HELLO,
    BadCall,
    error_frame,
    read_call,
    read_connect,
    result_frame,
    with_session_cookie,
)
from edge.gateway.sockets import ControlConnection, SocketHub
from edge.metrics import Metrics
from edge.pairing.models import ConnectAttempt, MalformedConnect
from edge.pairing.service import Admitted, Denied, PairingService
from edge.pairing.store import StoreError
from edge.refusals import Denial, Rejection
from edge.serialize import device_json

logger = logging.getLogger("edge.ws")


class _FrameTooBig(Exception):
    pass


def _new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


async def _receive_text(websocket: WebSocket, limit: int) -> str | None:
    """Next text frame; None for a binary frame; raises on disconnect or oversize."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        data = message.get("bytes") or b""
        if len(data) > limit:
            raise _FrameTooBig
        return None
    if len(text) > limit or len(text.encode("utf-8")) > limit:
        raise _FrameTooBig
    return str(text)


def _header(websocket: WebSocket, name: str) -> str | None:
    return websocket.headers.get(name)


class ControlSocket:
    """ASGI endpoint for ``/ws``."""

    def __init__(
        self,
        *,
        live: Live,
        service: PairingService,
        hub: SocketHub,
        metrics: Metrics,
        blocking: Blocking,
    ) -> None:
        self.live = live
        self.service = service
        self.hub = hub
        self.metrics = metrics
        self.blocking = blocking

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        websocket = WebSocket(scope, receive, send)
        live = self.live.config
        resolution = resolution_of(scope)
        started = time.perf_counter()
        conn = ControlConnection(websocket, resolution.client_ip, resolution.local)
        origin = _header(websocket, "origin")

        await websocket.accept()
        if not origin_allowed(origin, resolution, live.allowed_origins):
            self._refused(
                Denial.ORIGIN_NOT_ALLOWED, started, client=resolution.client_ip, origin=origin
            )
            await conn.deny(Denial.ORIGIN_NOT_ALLOWED)
            return
        cap = live.settings.pairing.max_unauthenticated_sockets_per_client
        if not self.hub.try_open(conn, cap):
            self._refused(
                Denial.RATE_LIMITED,
                started,
                client=resolution.client_ip,
                detail="unauthenticated socket cap",
            )
            await conn.deny(Denial.RATE_LIMITED)
            return
        try:
            await self._serve(conn, started)
        except WebSocketDisconnect:
            pass
        except _FrameTooBig:
            await conn.deny(Rejection.FRAME_TOO_LARGE)
        finally:
            self.hub.forget(conn)

    def _refused(self, denial: Denial, started: float, **fields: object) -> None:
        metrics = self.metrics
        metrics.auth_failure(denial.metric_label)
        metrics.observe_request("websocket", "denied", time.perf_counter() - started)
        logger.info(
            "control socket refused: %s",
            denial.reason,
            extra={
                "kind": "websocket",
                "decision": "denied",
                "reason": denial.metric_label,
                **fields,
            },
        )

    async def _serve(self, conn: ControlConnection, started: float) -> None:
        if await self._handshake(conn, started):
            await self._requests(conn)

    async def _handshake(self, conn: ControlConnection, started: float) -> bool:
        """Challenge, connect, decision: True once ``hello`` is sent.

        A function of its own so that what it holds (the connect frame, the
        issued device token) is gone when it returns, not kept for the life of
        an idle socket.
        """
        websocket = conn.websocket
        resolution = resolution_of(websocket.scope)
        nonce = _new_nonce()
        await conn.send_json({"type": "challenge", "nonce": nonce, "ts": int(time.time() * 1000)})
        try:
            text = await asyncio.wait_for(
                _receive_text(websocket, MAX_FRAME_BEFORE_HELLO),
                timeout=self.live.settings.pairing.handshake_timeout,
            )
        except TimeoutError:
            self._refused(Denial.HANDSHAKE_TIMEOUT, started, client=resolution.client_ip)
            await conn.deny(Denial.HANDSHAKE_TIMEOUT)
            return False
        attempt = read_connect(text)
        if attempt is None:
            self._refused(Denial.INVALID_HANDSHAKE, started, client=resolution.client_ip)
            await conn.deny(Denial.INVALID_HANDSHAKE)
            return False
        cookie = (
            None
            if resolution.local
            else session_token(websocket.scope["headers"], secure=resolution.scheme == "wss")
        )
        try:
            outcome, from_cookie = await self.blocking.run(
                _connect,
                self.service,
                attempt,
                cookie,
                nonce=nonce,
                client_ip=resolution.client_ip,
                local=resolution.local,
                user_agent=_header(websocket, "user-agent"),
            )
        except StoreError as exc:
            # Not a refusal of this client: the store is down. 1013 tells it to retry.
            logger.error("handshake could not reach the pairing store: %s", exc)
            await conn.deny(Rejection.STORE_UNAVAILABLE)
            return False
        if isinstance(outcome, Denied):
            await self._deny(conn, outcome, started)
            return False
        await self._hello(conn, outcome, started, token_in_cookie=from_cookie)
        return True

    async def _deny(self, conn: ControlConnection, outcome: Denied, started: float) -> None:
        denial = outcome.denial
        payload = _error_payload(outcome)
        if payload is not None:
            await conn.send_json(payload)
        self._refused(denial, started, client=conn.client_ip, detail=outcome.detail)
        await conn.deny(denial)

    async def _hello(
        self, conn: ControlConnection, outcome: Admitted, started: float, *, token_in_cookie: bool
    ) -> None:
        device = outcome.device
        self.hub.admit(conn, device)
        hello: dict[str, Any] = {
            "type": "hello",
            "device": {"id": device.id, "name": device.name, "role": str(device.role)},
            "deviceToken": outcome.device_token,
            "client": {"ip": conn.client_ip, "local": conn.local},
        }
        if token_in_cookie:
            # The browser authenticated with its HttpOnly cookie: echoing the token here
            # would hand it to page script, which the cookie exists to keep it from.
            del hello["deviceToken"]
        await conn.send_json(hello)
        decision = "local" if conn.local else "paired"
        self.metrics.observe_request("websocket", decision, time.perf_counter() - started)
        logger.info(
            "control socket admitted",
            extra={
                "kind": "websocket",
                "client": conn.client_ip,
                "decision": decision,
                "role": str(device.role),
            },
        )

    async def _requests(self, conn: ControlConnection) -> None:
        while not conn.closed:
            text = await _receive_text(conn.websocket, MAX_FRAME_AFTER_HELLO)
            if text is None:
                continue
            call = read_call(text)
            if isinstance(call, BadCall):
                await conn.send_json(error_frame(call.id, "bad_request", call.message))
                continue
            await conn.send_json(await self._call(conn, call.id, call.method, call.params))

    async def _call(
        self, conn: ControlConnection, req_id: Any, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        assert conn.device is not None
        if method == "self.whoami":
            return result_frame(req_id, device_json(conn.device))
        try:
            result = await call_admin_method(
                self.service,
                self.blocking,
                method,
                params,
                auth=AuthState("local" if conn.local else "paired", device=conn.device),
                resolution=resolution_of(conn.websocket.scope),
                public_url=self.live.settings.server.public_url,
            )
        except AdminError as exc:
            return error_frame(req_id, exc.code, str(exc))
        return result_frame(req_id, result)


def _error_payload(outcome: Denied) -> dict[str, Any] | None:
    """The ``error`` frame sent before the close, with what the client needs to act on it.

    Only pairing refusals have one: a pending request comes with its expiry
    (the page counts down to it), a declined one with the rest of its
    cool-down. Other refusals close at once, as clients expect; how many
    tries an address has left, or how long it is locked out, ``/api/whoami``
    tells (``attempts``).
    """
    denial = outcome.denial
    request = outcome.request
    if denial is Denial.PAIRING_REQUIRED and outcome.declined and request is not None:
        return {
            "type": "error",
            "code": "PAIRING_DECLINED",
            "requestId": request.id,
            "reason": request.reason,
            "retryAfter": math.ceil(outcome.retry_after),
            "detail": outcome.detail,
        }
    if denial is Denial.PAIRING_REQUIRED:
        payload: dict[str, Any] = {
            "type": "error",
            "code": "PAIRING_REQUIRED",
            "requestId": request.id if request else None,
            "reason": request.reason if request else outcome.detail,
        }
        if request is None:
            payload["detail"] = outcome.detail
        else:
            payload["expiresAt"] = int(request.expires_at * 1000)
        return payload
    return None


def _connect(
    service: PairingService,
    attempt: ConnectAttempt | MalformedConnect,
    cookie: str | None,
    **context: Any,
) -> tuple[Admitted | Denied, bool]:
    """``service.connect``, with the session cookie standing in for an empty ``auth``.

    A paired browser keeps its device token only in the HttpOnly cookie and
    connects with ``auth: {}`` and its device key: the cookie on the upgrade
    request is then its ``deviceToken``, the device signature is checked all
    the same, and the origin check keeps other sites' pages out. A cookie that
    belongs to another device (one this browser had before starting over) is
    not this device's credential and is left out. Runs through the blocking
    door: the store may block.
    """
    from_cookie = False
    if (
        cookie is not None
        and isinstance(attempt, ConnectAttempt)
        and attempt.empty_auth
        and attempt.device_id is not None
    ):
        holder = service.token_holder(cookie)  # a device id, compared as one
        from_cookie = holder is not None and holder == attempt.device_id
        if from_cookie:
            attempt = with_session_cookie(attempt, cookie)
    return service.connect(attempt=attempt, **context), from_cookie
