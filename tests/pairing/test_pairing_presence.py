"""Telling devices apart: last seen kept current (with throttled writes), twins, local clutter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pairing_support import Client, FakeClock

from edge.pairing.caches import TOUCH_WRITE_INTERVAL
from edge.pairing.models import REVOKED, Device
from edge.pairing.policy import PairingPolicy
from edge.pairing.service import Admitted, Denied, NotFound, PairingService
from edge.pairing.store import Seen, Store
from edge.refusals import Denial

MakeClient = Callable[..., Client]


class CountingWrites:
    """Wraps a store's ``record_seen`` to count the batches written."""

    def __init__(self, store: Store) -> None:
        self.batches: list[dict[str, Seen]] = []
        self._write = store.record_seen

    def __call__(self, seen: Any) -> None:
        self.batches.append(dict(seen))
        self._write(seen)


def _listed(service: PairingService, device_id: str) -> Device:
    (device,) = [d for d in service.list_devices() if d.id == device_id]
    return device


def test_the_listing_shows_a_device_seen_just_now_before_any_write(
    service: PairingService, make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(ip="198.51.100.77")
    client.pair()
    stored = service.store.get_device(client.device_id)
    assert stored is not None and stored.last_seen_at is None  # not written yet
    listed = _listed(service, client.device_id)
    assert (listed.last_seen_at, listed.last_ip) == (clock.now, "198.51.100.77")


def test_a_busy_device_is_written_once_a_minute_not_on_every_request(
    service: PairingService,
    make_client: MakeClient,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(ip="198.51.100.5")
    token = client.pair().device_token
    writes = CountingWrites(service.store)
    monkeypatch.setattr(service.store, "record_seen", writes)
    service.flush_touches()
    assert len(writes.batches) == 1  # first sight: written at once
    for _ in range(int(TOUCH_WRITE_INTERVAL) - 1):
        clock.advance(1)
        assert isinstance(service.authenticate_token(token, client_ip="198.51.100.5"), Device)
        service.flush_touches()  # the sweep flushes every few seconds
    assert len(writes.batches) == 1
    # ... yet the listing is current to the second.
    assert _listed(service, client.device_id).last_seen_at == clock.now
    clock.advance(1)
    service.authenticate_token(token, client_ip="198.51.100.5")
    service.flush_touches()
    assert len(writes.batches) == 2
    stored = service.store.get_device(client.device_id)
    assert stored is not None and stored.last_seen_at == clock.now


def test_a_new_address_is_written_at_the_next_flush(
    service: PairingService, make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(ip="198.51.100.5")
    token = client.pair().device_token
    service.flush_touches()
    clock.advance(2)
    service.authenticate_token(token, client_ip="203.0.113.40")
    service.flush_touches()
    stored = service.store.get_device(client.device_id)
    assert stored is not None and stored.last_ip == "203.0.113.40"


def test_approving_can_replace_the_older_twin_whose_token_then_dies_at_once(
    service: PairingService, make_client: MakeClient
) -> None:
    old = make_client(ip="198.51.100.9", name="Kitchen tablet")
    old_token = old.pair().device_token
    service.assign_user(old.device_id, "alice", actor="cli")
    new = make_client(ip="198.51.100.9", name="Kitchen tablet")
    asked = new.with_gateway_token()
    assert isinstance(asked, Denied) and asked.request is not None
    device, replaced = service.approve_replacing(asked.request.id, old.device_id[:12], actor="ops")
    assert device.id == new.device_id and device.user == "alice"
    assert replaced is not None and replaced.id == old.device_id and replaced.status == REVOKED
    assert service.authenticate_token(old_token) is Denial.DEVICE_REVOKED
    assert [d.id for d in service.list_devices()] == [new.device_id]


def test_replacing_names_a_device_that_exists(
    service: PairingService, make_client: MakeClient
) -> None:
    new = make_client()
    asked = new.with_gateway_token()
    assert isinstance(asked, Denied) and asked.request is not None
    with pytest.raises(NotFound):
        service.approve_replacing(asked.request.id, "abcdef123456", actor="ops")
    assert service.list_requests()  # nothing was approved


def test_idle_local_devices_expire_and_operator_approved_ones_stay(
    make_service: Callable[..., PairingService], make_client: MakeClient, clock: FakeClock
) -> None:
    service = make_service(PairingPolicy(local_device_idle_expiry=3600))
    local = make_client(service=service, ip="127.0.0.1", name="Chromium on Linux")
    admitted = local.connect({}, local=True, ip="127.0.0.1")
    assert isinstance(admitted, Admitted) and admitted.device.approved_by == "local"
    remote = make_client(service=service)
    remote.pair()
    service.flush_touches()
    clock.advance(3600 + 1)
    service.sweep()
    assert [d.id for d in service.list_devices()] == [remote.device_id]
    # The local client is approved again at its next connect: nothing is lost.
    again = local.connect({}, local=True, ip="127.0.0.1")
    assert isinstance(again, Admitted) and again.device.id == local.device_id
