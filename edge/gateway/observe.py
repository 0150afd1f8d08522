"""Feeding ``edge.diagnostics`` from requests: one pure ASGI middleware and the refusal counter.

The middleware sits right after client resolution. It keeps the scope's
resolution in a context variable for the rest of the request, so the refusal
counter (``ObservedMetrics.auth_failure``, called wherever a refusal is
counted) records which peer and which proxy anomaly the refusal came with
without every caller passing them on. It also notices the first request a
trusted proxy forwarded with a header: the proof that clears the same-host
proxy warning.
"""

from __future__ import annotations

import contextvars
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from edge.diagnostics import Diagnostics, describe_forwarded
from edge.gateway.blocking import Blocking
from edge.gateway.context import RESOLUTION_KEY
from edge.metrics import Metrics
from edge.net import Resolution

logger = logging.getLogger("edge.proxy")

_RESOLUTION: contextvars.ContextVar[Resolution | None] = contextvars.ContextVar(
    "edge_resolution", default=None
)


class ObservedMetrics(Metrics):
    """``Metrics`` whose refusal counter also tells the diagnostics record."""

    def __init__(self, version: str, diagnostics: Diagnostics) -> None:
        super().__init__(version)
        self.diagnostics = diagnostics

    def auth_failure(self, reason: str) -> None:
        super().auth_failure(reason)
        resolution = _RESOLUTION.get()
        if resolution is None:
            self.diagnostics.refused(reason, None, ())
        else:
            self.diagnostics.refused(reason, resolution.peer_ip, resolution.anomalies)


class DiagnosticsMiddleware:
    """Record what each HTTP or WebSocket scope's resolution shows; change nothing."""

    def __init__(self, app: ASGIApp, *, diagnostics: Diagnostics, blocking: Blocking) -> None:
        self.app = app
        self.diagnostics = diagnostics
        self.blocking = blocking

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        resolution = scope.get(RESOLUTION_KEY)
        if not isinstance(resolution, Resolution):
            await self.app(scope, receive, send)
            return
        if (
            resolution.trusted_peer
            and resolution.header_used is not None
            and not resolution.anomalies
            and self.diagnostics.forwarded is None
            and self.diagnostics.forwarded_by(
                resolution.peer_ip, resolution.header_used, resolution.client_ip
            )
        ):
            seen = self.diagnostics.forwarded
            logger.info(
                "%s: the proxy forwards as it should; the same-host proxy warning is cleared",
                describe_forwarded(seen) if seen is not None else "a forwarded request arrived",
                extra={"signal": "same_host_proxy_cleared"},
            )
            self.blocking.spawn(self.diagnostics.flush)
        token = _RESOLUTION.set(resolution)
        try:
            await self.app(scope, receive, send)
        finally:
            _RESOLUTION.reset(token)
