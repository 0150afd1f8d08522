"""The pairing store: ``open_store`` picks a backend by the scheme of ``store.url``.

``Store`` (``base``) is the contract, ``Ledger`` (``ledger``) its one
implementation, every decision written once; the backends (``sqlite``,
``redis``) only store. The names below are what the rest of Edge imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from edge.pairing.store.base import (
    CLAIM_AUDIT,
    CLAIM_NOTIFY,
    DEFAULT_SQLITE_NAME,
    EVENT_LOG_MAX_AGE,
    EVENT_LOG_MAX_EVENTS,
    MAX_EVENTS_PER_READ,
    RESOLVED_RETENTION,
    Backend,
    BackendInfo,
    FailureCount,
    RedisInfo,
    Seen,
    SnapshotStore,
    Store,
    StoredRequest,
    StoreError,
    StoreSnapshot,
)
from edge.pairing.store.ledger import Ledger
from edge.pairing.store.outcomes import (
    Counted,
    Declined,
    PendingCapHit,
    ResolveOutcome,
    ResolveStatus,
    pending_cap_message,
)
from edge.pairing.store.sqlite import SqliteStore, StoreMissing, marker_path, start_over
from edge.pairing.store.urls import backend_of, redact_url, sqlite_file, sqlite_path_of

__all__ = [
    "CLAIM_AUDIT",
    "CLAIM_NOTIFY",
    "DEFAULT_SQLITE_NAME",
    "EVENT_LOG_MAX_AGE",
    "EVENT_LOG_MAX_EVENTS",
    "MAX_EVENTS_PER_READ",
    "RESOLVED_RETENTION",
    "Backend",
    "BackendInfo",
    "Counted",
    "Declined",
    "FailureCount",
    "Ledger",
    "PendingCapHit",
    "RedisInfo",
    "ResolveOutcome",
    "ResolveStatus",
    "Seen",
    "SnapshotStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreMissing",
    "StoreSnapshot",
    "StoredRequest",
    "backend_of",
    "marker_path",
    "open_store",
    "pending_cap_message",
    "redact_url",
    "sqlite_path_of",
    "start_over",
]


def _sqlite(url: str | None, data_dir: Path) -> Store:
    path = data_dir / DEFAULT_SQLITE_NAME if url is None else sqlite_file(url, data_dir)
    return SqliteStore(path)


def _redis(url: str | None, data_dir: Path) -> Store:
    assert url is not None
    try:
        module = importlib.import_module("edge.pairing.store.redis")
    except ModuleNotFoundError as exc:
        if exc.name not in {"edge.pairing.store.redis", "redis"}:
            raise
        raise StoreError(
            f"store.url: {redact_url(url)!r} asks for the Redis store, which is not available "
            f"in this installation ({exc.name} is missing); unset store.url to use SQLite"
        ) from None
    store: Store = module.RedisStore(url)
    return store


# The backends by what ``urls.backend_of`` names; each is imported only when used.
BACKENDS: dict[str, Callable[[str | None, Path], Store]] = {"sqlite": _sqlite, "redis": _redis}


def open_store(url: str | None, data_dir: Path) -> Store:
    """The store named by ``store.url``.

    ``None`` is the default SQLite file in ``data_dir``; ``sqlite:///abs/path``
    an absolute file; ``sqlite:name`` a file relative to ``data_dir``;
    ``redis://`` / ``rediss://`` / ``unix://`` the Redis store.
    """
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise StoreError("store.url: empty; leave it unset for the default SQLite file")
    backend = backend_of(url)
    if backend is None:
        raise StoreError(
            f"store.url: {redact_url(str(url))!r} is not a supported store; use "
            "sqlite:///path/to/file, sqlite:name (inside data_dir) or redis://host:port/db"
        )
    return BACKENDS[backend](url, data_dir)
