"""100,000 pairing requests, each from a new device key, from 10,000 addresses.

Straight at ``PairingService.connect`` with the gateway token (so none of them
counts as a failed attempt): the caps hold at every step, the memory the
flood allocates stays bounded (``tracemalloc``), and an operator can still
list the pending requests, approve one, and so make room for a real device.
"""

from __future__ import annotations

import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.gateway.protocol import connect_attempt
from edge.pairing.identity import DeviceKey
from edge.pairing.service import Admitted, Denied, PairingPolicy, PairingService
from edge.pairing.store import open_store
from edge.refusals import Denial
from tests.conftest import GATEWAY_TOKEN

REQUESTS = 100_000
ADDRESSES = 10_000
WARM_UP = 5_000
MAX_PENDING = 256
MAX_PENDING_PER_CLIENT = 8
# What the traced part of the flood may hold at its peak: far below what keeping
# anything per request would take (95,000 requests x even 100 bytes is 9.5 MB).
PEAK_LIMIT = 4 * 1024 * 1024


@pytest.fixture
def service() -> Iterator[PairingService]:
    # The SQLite store commits with synchronous=FULL; on a RAM disk the flood takes
    # seconds instead of minutes, and nothing about the caps depends on the disk.
    ram_disk = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="edge-flood-", dir=ram_disk) as directory:
        policy = PairingPolicy(
            max_pending=MAX_PENDING, max_pending_per_client=MAX_PENDING_PER_CLIENT
        )
        yield PairingService(open_store(None, Path(directory)), GATEWAY_TOKEN, policy)


def _ask(service: PairingService, index: int, name: str = "flood") -> Denied | Admitted:
    key = DeviceKey.generate()
    nonce = f"nonce-{index}"
    frame = {
        "type": "connect",
        "auth": {"token": GATEWAY_TOKEN},
        "device": key.device_field(nonce, "user"),
        "client": {"name": f"{name} {index}"},
        "role": "user",
    }
    return service.connect(
        attempt=connect_attempt(frame),
        nonce=nonce,
        client_ip=f"10.{index % ADDRESSES // 250}.{index % 250}.1",
        local=False,
        user_agent="flood/1.0",
    )


def _pending_by_client(service: PairingService) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for request in service.list_requests():
        counts[request.client_ip] = counts.get(request.client_ip, 0) + 1
    return counts


def test_a_flood_of_pairing_requests_keeps_the_caps_memory_and_the_operator(
    service: PairingService,
) -> None:
    outcomes: dict[str, int] = {}
    for index in range(WARM_UP):
        outcome = _ask(service, index)
        assert isinstance(outcome, Denied) and outcome.denial is Denial.PAIRING_REQUIRED
        outcomes["queued" if outcome.request else "capped"] = (
            outcomes.get("queued" if outcome.request else "capped", 0) + 1
        )
    assert outcomes["queued"] == MAX_PENDING

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for index in range(WARM_UP, REQUESTS):
            outcome = _ask(service, index)
            assert isinstance(outcome, Denied) and outcome.request is None
            if index % 10_000 == 0:
                pending, _ = service.counts()
                assert pending == MAX_PENDING
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"the flood held {peak / 1024:.0f} KiB at its peak"

    by_client = _pending_by_client(service)
    assert sum(by_client.values()) == MAX_PENDING
    assert max(by_client.values()) <= MAX_PENDING_PER_CLIENT

    # The operator still has the upper hand: list, approve, and a real device gets in line.
    oldest = service.list_requests()[0]
    device = service.approve(oldest.id, actor="operator")
    assert device.is_paired and device.id == oldest.device_id
    real = _ask(service, REQUESTS + 1, name="real")
    assert isinstance(real, Denied) and real.request is not None


def test_one_address_cannot_take_more_than_its_share(service: PairingService) -> None:
    """Requests from one address stop at max_pending_per_client; other addresses still get in."""
    same_address = [
        service.connect(
            attempt=connect_attempt(_frame(DeviceKey.generate(), f"n{i}")),
            nonce=f"n{i}",
            client_ip="203.0.113.66",
            local=False,
            user_agent=None,
        )
        for i in range(200)
    ]
    queued = [o for o in same_address if isinstance(o, Denied) and o.request is not None]
    assert len(queued) == MAX_PENDING_PER_CLIENT
    other = _ask(service, 7)
    assert isinstance(other, Denied) and other.request is not None


def _frame(key: DeviceKey, nonce: str) -> dict[str, object]:
    return {
        "type": "connect",
        "auth": {"token": GATEWAY_TOKEN},
        "device": key.device_field(nonce, "user"),
        "role": "user",
    }
