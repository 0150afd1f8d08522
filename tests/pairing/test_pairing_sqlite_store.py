"""SQLite specifics: files and modes, schema versions, damaged files, what lands on disk."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import json
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from pairing_support import GATEWAY_TOKEN, START_TIME, Client, FakeClock

from edge.pairing.models import PAIRED, Device, Role
from edge.pairing.service import PairingService
from edge.pairing.store import StoreError, open_store
from edge.pairing.store import sqlite as sqlite_store
from edge.pairing.store.sqlite import APPLICATION_ID, SCHEMA_VERSION, SqliteStore
from edge.pairing.store.sqlite_tx import SqliteTx

NOW = START_TIME


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def _device(number: int = 1) -> Device:
    return Device(
        id=f"{number:064x}",
        public_key="k",
        name=f"device {number}",
        role=Role.USER,
        status=PAIRED,
        token_hash=f"{number:064x}",
        created_at=NOW,
        approved_by="cli",
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "edge.sqlite3"


def test_new_store_is_private_wal_and_current(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.pair_device(_device(), actor="cli", now=NOW)  # creates the -wal and -shm files
    try:
        assert _mode(db_path.parent) == 0o700
        for path in db_path.parent.iterdir():
            assert _mode(path) == 0o600, path.name
        assert {p.name for p in db_path.parent.iterdir()} >= {
            "edge.sqlite3",
            "edge.sqlite3-wal",
            "edge.sqlite3-shm",
        }
        assert _pragma(db_path, "user_version") == SCHEMA_VERSION
        assert _pragma(db_path, "application_id") == APPLICATION_ID
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def _sqlite_memory_used() -> int:
    """Bytes SQLite has allocated in this process, from the library the sqlite3 module uses."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("libsqlite3 is not a shared library here")
    library = ctypes.CDLL(name)
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return int(library.sqlite3_memory_used())


def test_page_cache_per_thread_is_bounded_however_large_the_store(db_path: Path) -> None:
    """Each thread has its own connection; SQLite's default 2 MiB cache each grew with the file.

    Eight threads read a 6 MiB event log through the store. With the bound, what
    SQLite holds stays near eight times PAGE_CACHE_KIB; with the default it is
    above 14 MiB (the soak saw the gateway's memory climb with the store).
    """
    store = SqliteStore(db_path)
    try:
        with sqlite3.connect(db_path) as writer:
            payload = json.dumps({"pad": "x" * 3000})
            writer.executemany(
                "INSERT INTO events (type, data, at) VALUES ('test.padding', ?, ?)",
                [(payload, NOW) for _ in range(2000)],
            )
        wal = db_path.with_name(db_path.name + "-wal")
        assert db_path.stat().st_size + wal.stat().st_size > 6e6
        before = _sqlite_memory_used()
        done = threading.Barrier(9)
        counts: list[int] = []

        def reader() -> None:
            seen, after = 0, 0
            while batch := store.events_after(after, limit=500):
                seen, after = seen + len(batch), batch[-1].seq
            counts.append(seen)
            done.wait()  # the thread, and so its connection, lives until the measurement

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for thread in threads:
            thread.start()
        while len(counts) < 8 and any(t.is_alive() for t in threads):
            threading.Event().wait(0.01)
        held = _sqlite_memory_used() - before
        done.wait()
        for thread in threads:
            thread.join()
        assert counts == [2000] * 8
        bound = 8 * sqlite_store.PAGE_CACHE_KIB * 1024
        assert held < bound + 2 * 1024 * 1024, f"SQLite holds {held / 2**20:.1f} MiB"
    finally:
        store.close()


def test_migration_from_an_empty_file(db_path: Path) -> None:
    db_path.parent.mkdir(mode=0o700)
    db_path.touch(mode=0o600)
    store = SqliteStore(db_path)
    try:
        assert _pragma(db_path, "user_version") == SCHEMA_VERSION
        store.pair_device(_device(), actor="cli", now=NOW)
        assert store.get_device(_device().id) == _device()
    finally:
        store.close()


def test_reopening_keeps_the_data_and_runs_no_migration_twice(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.pair_device(_device(), actor="cli", now=NOW)
    store.close()
    again = SqliteStore(db_path)
    try:
        assert again.get_device(_device().id) == _device()
        assert again.latest_seq() == 1
    finally:
        again.close()


def test_a_store_of_schema_1_gains_users_and_keeps_its_devices(db_path: Path) -> None:
    """A store written before users existed opens with its devices paired and user-less."""
    db_path.parent.mkdir(mode=0o700)
    device = _device()
    conn = sqlite3.connect(db_path)
    with conn:  # the file exactly as the schema-1 Edge left it
        for statement in sqlite_store.MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO devices (id, public_key, name, role, status, token_hash, "
            "created_at, approved_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device.id,
                device.public_key,
                device.name,
                device.role.value,
                device.status,
                device.token_hash,
                device.created_at,
                device.approved_by,
            ),
        )
    conn.close()
    db_path.chmod(0o600)
    store = SqliteStore(db_path)
    try:
        assert _pragma(db_path, "user_version") == SCHEMA_VERSION == 3
        migrated = store.get_device(device.id)
        assert migrated == device and migrated.user is None
        assigned = store.assign_user(device.id, "alice", actor="cli", now=NOW)
        assert assigned is not None and assigned.user == "alice"
        assert store.device_for_token(str(device.token_hash)) == assigned
    finally:
        store.close()


def test_later_migrations_run_in_order_on_an_older_file(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SqliteStore(db_path).close()
    extra = (
        ("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)",),
        ("ALTER TABLE notes ADD COLUMN author TEXT",),
    )
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", sqlite_store.MIGRATIONS + extra)
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    SqliteStore(db_path).close()
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION + 2
    with sqlite3.connect(db_path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(notes)")]
    assert columns == ["id", "text", "author"]


def test_file_from_a_newer_edge_is_refused(db_path: Path) -> None:
    SqliteStore(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="written by a newer Edge"):
        SqliteStore(db_path)


def test_database_of_another_application_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir()
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(StoreError, match="another application") as raised:
        SqliteStore(db_path)
    assert str(db_path) in str(raised.value)
    with sqlite3.connect(db_path) as conn:  # and it was left alone
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]


def test_corrupt_file_gives_store_error_with_path_and_next_step(db_path: Path) -> None:
    db_path.parent.mkdir()
    db_path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with pytest.raises(StoreError) as raised:
        open_store(f"sqlite:///{db_path}", db_path.parent)
    message = str(raised.value)
    assert str(db_path) in message and "damaged or not a database" in message
    assert "move the file away" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_damaged_pages_inside_a_real_store_are_detected(db_path: Path) -> None:
    store = SqliteStore(db_path)
    for number in range(1, 400):
        store.pair_device(_device(number), actor="cli", now=NOW)
    store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db_path.read_bytes())
    page = _pragma(db_path, "page_size")
    assert len(data) > 8 * page
    for offset in range(2 * page, len(data) - page, page):
        data[offset : offset + 64] = b"\xa5" * 64
    db_path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged or not a database"):
        SqliteStore(db_path)


def test_directory_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        SqliteStore(tmp_path)


def test_closed_store_says_so(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.get_device("0" * 64)


def test_a_failed_event_write_rolls_back_its_change(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(db_path)
    try:

        def broken_append(*args: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(SqliteTx, "append", broken_append)
        with pytest.raises(StoreError, match=r"cannot pair a device .*disk I/O error"):
            store.pair_device(_device(), actor="cli", now=NOW)
        assert store.get_device(_device().id) is None
    finally:
        store.close()


def test_no_plaintext_secret_ever_reaches_the_files(db_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(db_path)
    service = PairingService(store, GATEWAY_TOKEN, clock=clock)
    try:
        client = Client(service, clock)
        issued = [client.pair().device_token]
        issued.append(service.rotate_token(client.device_id, actor="cli"))
        _, code = service.create_invite(role=Role.USER, name=None, ttl=60, actor="cli")
        invited = Client(service, clock)
        invited.connect({"invite": code})
        assert invited.device_token is not None
        issued += [code, invited.device_token, GATEWAY_TOKEN]
        local = Client(service, clock, ip="127.0.0.1")
        local.connect({}, local=True)
        assert local.device_token is not None
        issued.append(local.device_token)
        device = store.get_device(client.device_id)
        assert device is not None and device.token_hash is not None
        files = b"".join(p.read_bytes() for p in sorted(db_path.parent.iterdir()))
        assert device.token_hash.encode() in files  # the scan does see the stored values
        for secret in issued:
            assert secret.encode() not in files
    finally:
        store.close()


# -- open_store ----------------------------------------------------------------------------------


def test_default_store_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    store = open_store(None, tmp_path / "data")
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "data" / "edge.sqlite3"
        assert store.description == f"sqlite://{tmp_path / 'data' / 'edge.sqlite3'}"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "relative"),
    [("sqlite:///{tmp}/abs/edge.db", "abs/edge.db"), ("sqlite:rel/edge.db", "data/rel/edge.db")],
)
def test_sqlite_urls(tmp_path: Path, url: str, relative: str) -> None:
    store = open_store(url.format(tmp=tmp_path), tmp_path / "data")
    try:
        assert isinstance(store, SqliteStore) and store.path == tmp_path / relative
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("sqlite:", "names no file"),
        ("sqlite:///", "names no file"),
        ("sqlite://server/edge.db", "has a host part"),
        (
            "postgres://edge:hunter2@db.internal/edge",
            "'postgres://edge:\\*\\*\\*@db.internal/edge'",
        ),
        ("edge.sqlite3", "not a supported store"),
    ],
)
def test_bad_store_urls_are_named_without_their_password(
    tmp_path: Path, url: str, message: str
) -> None:
    with pytest.raises(StoreError, match=message) as raised:
        open_store(url, tmp_path)
    assert "hunter2" not in str(raised.value)
    assert str(raised.value).startswith("store.url: ")


@pytest.mark.skipif(
    importlib.util.find_spec("edge.pairing.store.redis") is not None,
    reason="the Redis store exists; its own tests cover it",
)
def test_redis_url_without_the_redis_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="Redis store, which is not available") as raised:
        open_store("redis://:s3cret@127.0.0.1:6379/0", tmp_path)
    assert "s3cret" not in str(raised.value)
