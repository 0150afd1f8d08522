"""Test helpers for the pairing domain: a fake clock and a client that signs like a real one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.gateway.protocol import connect_attempt
from edge.pairing.identity import DeviceKey
from edge.pairing.service import Admitted, Denied, PairingService

GATEWAY_TOKEN = "gw_test_token_0123456789abcdefghijklmnopq"
START_TIME = 1_700_000_000.0


class FakeClock:
    """Injected time: tests move it explicitly, never sleep."""

    def __init__(self, now: float = START_TIME) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def ms(self) -> int:
        return int(self.now * 1000)


_nonce_counter = iter(range(1, 10**9))


def fresh_nonce() -> str:
    return f"nonce-{next(_nonce_counter):09d}-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


@dataclass
class Client:
    """A device with its own Ed25519 key, answering challenges like a real client."""

    service: PairingService
    clock: FakeClock
    ip: str | None = "198.51.100.10"
    name: str = "laptop"
    key: DeviceKey = field(default_factory=DeviceKey.generate)
    device_token: str | None = None

    @property
    def device_id(self) -> str:
        return self.key.device_id

    def frame(
        self,
        nonce: str,
        *,
        auth: dict[str, Any] | None = None,
        role: str = "user",
        signed_at_ms: int | None = None,
    ) -> dict[str, Any]:
        signed_at = self.clock.ms if signed_at_ms is None else signed_at_ms
        frame: dict[str, Any] = {
            "type": "connect",
            "device": self.key.device_field(nonce, role, signed_at),
            "client": {"name": self.name, "app": "tests", "version": "1"},
            "role": role,
        }
        if auth is not None:
            frame["auth"] = auth
        return frame

    def connect(
        self,
        auth: dict[str, Any] | None = None,
        *,
        role: str = "user",
        local: bool = False,
        ip: str | None = "",
        frame: dict[str, Any] | None = None,
        nonce: str | None = None,
    ) -> Admitted | Denied:
        nonce = nonce or fresh_nonce()
        outcome = self.service.connect(
            attempt=connect_attempt(
                frame if frame is not None else self.frame(nonce, auth=auth, role=role)
            ),
            nonce=nonce,
            client_ip=self.ip if ip == "" else ip,
            local=local,
            user_agent="pytest-client/1.0",
        )
        if isinstance(outcome, Admitted):
            self.device_token = outcome.device_token
        return outcome

    def with_gateway_token(self, role: str = "user") -> Admitted | Denied:
        return self.connect({"token": GATEWAY_TOKEN}, role=role)

    def with_device_token(self, role: str = "user") -> Admitted | Denied:
        assert self.device_token is not None, "the client was never admitted"
        return self.connect({"deviceToken": self.device_token}, role=role)

    def pair(self, role: str = "user", actor: str = "cli") -> Admitted:
        """Ask with the gateway token, have an operator approve, reconnect: the usual path."""
        asked = self.with_gateway_token(role)
        assert isinstance(asked, Denied) and asked.request is not None, asked
        self.service.approve(asked.request.id, actor=actor)
        admitted = self.with_gateway_token(role)
        assert isinstance(admitted, Admitted), admitted
        return admitted
