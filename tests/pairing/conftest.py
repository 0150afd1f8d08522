"""Fixtures for the pairing domain: store backends, a fake clock, and a signing client.

Store contract tests run once per entry of ``STORE_FACTORIES``. A factory is a
context manager that, given a fresh temporary directory, yields the
``store.url`` of an empty store and cleans up afterwards; tests open it with
``open_store(url, data_dir)`` (also inside child processes). To hold another
backend to the contract, add an entry, e.g.::

    @contextlib.contextmanager
    def redis_backend(tmp_path: Path) -> Iterator[str]:
        ...start or select an empty database on 127.0.0.1...
        yield "redis://127.0.0.1:6379/15"
        ...flush it...

    STORE_FACTORIES["redis"] = redis_backend

Backend-specific tests can check ``store_backend`` (the entry's name).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The repository root (for ``edge``) and this directory (for ``pairing_support``), so the
# tests run whatever the import mode and whether or not the package is installed.
for _path in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from pairing_support import GATEWAY_TOKEN, Client, FakeClock  # noqa: E402

from edge.pairing.service import PairingPolicy, PairingService  # noqa: E402
from edge.pairing.store import Store, open_store  # noqa: E402
from tests.redis_server import redis_backend, stop_shared_redis_server  # noqa: E402, F401


@contextlib.contextmanager
def sqlite_backend(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'store' / 'edge.sqlite3'}"


StoreFactory = Callable[[Path], contextlib.AbstractContextManager[str]]
STORE_FACTORIES: dict[str, StoreFactory] = {"sqlite": sqlite_backend, "redis": redis_backend}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path) -> Iterator[str]:
    with STORE_FACTORIES[store_backend](tmp_path) as url:
        yield url


@pytest.fixture
def open_store_again(store_url: str, data_dir: Path) -> Iterator[Callable[[], Store]]:
    """Open further, independent handles on the same store (like another process would)."""
    opened: list[Store] = []

    def _open() -> Store:
        store = open_store(store_url, data_dir)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store_again: Callable[[], Store]) -> Store:
    return open_store_again()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_service(store: Store, clock: FakeClock) -> Callable[..., PairingService]:
    def _make(policy: PairingPolicy | None = None, *, on: Store | None = None) -> PairingService:
        return PairingService(on or store, GATEWAY_TOKEN, policy or PairingPolicy(), clock=clock)

    return _make


@pytest.fixture
def service(make_service: Callable[..., PairingService]) -> PairingService:
    return make_service()


@pytest.fixture
def make_client(service: PairingService, clock: FakeClock) -> Callable[..., Client]:
    def _make(**kwargs: Any) -> Client:
        kwargs.setdefault("service", service)
        return Client(clock=clock, **kwargs)

    return _make
