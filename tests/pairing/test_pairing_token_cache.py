"""The token cache by the token as presented: no hashing on a hit, never a device it forgot.

``known_authentication`` is what the event loop asks on every request with a
device token. A token seen within the TTL is answered without hashing it;
revocation (here or in another process, through ``apply_events``) and token
rotation must take effect on the very next call, through both maps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import pytest
from pairing_support import Client, FakeClock

import edge.pairing.service as service_module
from edge.pairing.caches import TOKEN_CACHE_SIZE, TokenCache
from edge.pairing.models import Device, Role
from edge.pairing.service import PairingService
from edge.pairing.store import Store
from edge.refusals import Denial


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token ``PairingService`` hashes, in order."""
    seen: list[str] = []
    real = service_module.hash_secret

    def counting(secret: str) -> str:
        seen.append(secret)
        return real(secret)

    monkeypatch.setattr(service_module, "hash_secret", counting)
    return seen


def paired(service: PairingService, clock: FakeClock) -> tuple[str, str]:
    client = Client(service, clock)
    client.pair()
    assert client.device_token is not None
    return client.device_id, client.device_token


def test_a_token_seen_within_the_ttl_is_not_hashed_again(
    service: PairingService, clock: FakeClock, hashes: list[str]
) -> None:
    device_id, token = paired(service, clock)
    first = service.authenticate_token(token)  # the store read (and the cache entry)
    assert isinstance(first, Device) and first.id == device_id
    hashes.clear()
    for _ in range(3):
        outcome = service.known_authentication(token)
        assert isinstance(outcome, Device) and outcome.id == device_id
    assert hashes == [token]  # the first cached answer hashed it; the next two did not


def test_revocation_here_takes_effect_at_once_through_both_maps(
    service: PairingService, clock: FakeClock
) -> None:
    device_id, token = paired(service, clock)
    service.authenticate_token(token)
    service.known_authentication(token)
    assert isinstance(service.known_authentication(token), Device)  # from the presented map
    service.revoke(device_id, actor="test")
    assert service.known_authentication(token) is None  # only the store can say now
    assert service.authenticate_token(token) == Denial.DEVICE_REVOKED


def test_revocation_in_another_process_takes_effect_once_its_event_arrives(
    make_service: Callable[..., PairingService], store: Store, clock: FakeClock
) -> None:
    worker_a, worker_b = make_service(), make_service()
    device_id, token = paired(worker_a, clock)
    worker_b.authenticate_token(token)
    worker_b.known_authentication(token)
    assert isinstance(worker_b.known_authentication(token), Device)
    seq = store.latest_seq()
    worker_a.revoke(device_id, actor="test")
    worker_b.apply_events(store.events_after(seq, 100))
    assert worker_b.known_authentication(token) is None
    assert worker_b.authenticate_token(token) == Denial.DEVICE_REVOKED


def test_a_rotated_token_is_forgotten_and_the_new_one_works(
    service: PairingService, clock: FakeClock
) -> None:
    client = Client(service, clock)
    client.pair()
    old = client.device_token
    assert old is not None
    service.authenticate_token(old)
    service.known_authentication(old)
    assert isinstance(service.known_authentication(old), Device)
    new = service.rotate_token(client.device_id, actor="test")
    assert new != old
    assert service.known_authentication(old) is None
    assert service.authenticate_token(old) == Denial.DEVICE_TOKEN_INVALID
    assert isinstance(service.authenticate_token(new), Device)


def a_device(index: int) -> Device:
    return Device(f"d{index}", "key", "phone", Role.USER, "paired", f"h{index}", 0.0, "test")


class _ForgetAfterRead(OrderedDict[str, tuple[Device, float]]):
    """Entries whose every read is followed at once by a revocation of device d1."""

    cache: TokenCache

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        found = super().get(key, default)
        self.cache.forget("d1")
        return found


def test_a_device_forgotten_between_the_read_and_the_copy_is_not_copied() -> None:
    cache = TokenCache()
    device = a_device(1)
    cache.lookup("h1", lambda _hash: device)
    racing = _ForgetAfterRead(cache._entries)
    racing.cache = cache
    cache._entries = racing
    assert cache.fresh("h1", presented="the-token") is device  # what was read, answered
    assert cache.fresh_presented("the-token") is None  # but not remembered


def test_the_presented_map_stays_bounded() -> None:
    cache = TokenCache()
    for index in range(TOKEN_CACHE_SIZE + 10):
        device = a_device(index)
        cache.lookup(f"h{index}", lambda _hash, device=device: device)
        cache.fresh(f"h{index}", presented=f"t{index}")
    assert len(cache._presented) == TOKEN_CACHE_SIZE
    assert cache.fresh_presented("t0") is None
    last = cache.fresh_presented(f"t{TOKEN_CACHE_SIZE + 9}")
    assert last is not None and last.id == f"d{TOKEN_CACHE_SIZE + 9}"
