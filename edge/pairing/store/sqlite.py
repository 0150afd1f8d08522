"""The default backend: one SQLite file shared by every worker process and the CLI.

WAL lets readers run beside the single writer; ``synchronous=FULL`` makes an
acknowledged write survive a crash or ``kill -9``; ``BEGIN IMMEDIATE`` takes
the write lock before the first read of a read-modify-write, so two processes
deciding on the same request are serialised by SQLite itself. Each thread gets
its own connection (SQLite connections are not meant to be shared). The schema
is versioned with ``PRAGMA user_version`` and marked as Edge's with
``PRAGMA application_id``, so a foreign or damaged file is refused with a
clear message instead of being written into.

A ledger step is one ``BEGIN IMMEDIATE`` transaction: one write lock, one
commit (one fsync) per decision, and never a retry.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from edge.pairing.models import Event
from edge.pairing.store.base import (
    EVENT_LOG_MAX_AGE,
    EVENT_LOG_MAX_EVENTS,
    RESOLVED_RETENTION,
    BackendInfo,
    FailureCount,
    StoreError,
    StoreSnapshot,
)
from edge.pairing.store.claims import InstanceClaims
from edge.pairing.store.ledger import Ledger
from edge.pairing.store.sqlite_tx import SqliteTx
from edge.pairing.tokens import PRIVATE_FILE_MODE, ensure_private_dir

T = TypeVar("T")

APPLICATION_ID = 0x45444745  # "EDGE"
BUSY_TIMEOUT = 10.0
# SQLite's own page cache, per connection (there is one per thread). Its default of
# about 2 MiB made the gateway's memory grow with the database, times every thread.
# A commit by any other connection empties it anyway, reads that miss it come from
# the OS page cache, and hot lookups are cached above: benchmarks/store.py shows no
# difference between 64 KiB and 256 KiB.
PAGE_CACHE_KIB = 64
POLL_INTERVAL = 0.05

# Ordered migrations: MIGRATIONS[n] takes the schema from version n to n + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            public_key TEXT NOT NULL,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            status TEXT NOT NULL,
            token_hash TEXT UNIQUE,
            created_at REAL NOT NULL,
            approved_by TEXT NOT NULL,
            last_seen_at REAL,
            last_ip TEXT,
            revoked_at REAL
        )""",
        """CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            public_key TEXT NOT NULL,
            name TEXT NOT NULL,
            client_ip TEXT,
            user_agent TEXT,
            role TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            resolved_at REAL,
            resolved_by TEXT
        )""",
        "CREATE UNIQUE INDEX requests_pending_device ON requests(device_id) "
        "WHERE status = 'pending'",
        "CREATE INDEX requests_pending_expiry ON requests(expires_at) WHERE status = 'pending'",
        "CREATE INDEX requests_pending_client ON requests(client_ip) WHERE status = 'pending'",
        "CREATE INDEX requests_resolved ON requests(resolved_at) WHERE status != 'pending'",
        """CREATE TABLE invites (
            id TEXT PRIMARY KEY,
            code_hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            name TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            used_at REAL,
            used_by_device TEXT
        )""",
        """CREATE TABLE failures (
            client TEXT PRIMARY KEY,
            window_start REAL NOT NULL,
            count INTEGER NOT NULL,
            locked_until REAL NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            type TEXT NOT NULL,
            data TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX events_at ON events(at)",
    ),
    (
        # The per-client pending cap counts under the lockout's key (IPv6 by prefix).
        "ALTER TABLE requests ADD COLUMN client_key TEXT",
        "UPDATE requests SET client_key = client_ip",
        "DROP INDEX requests_pending_client",
        "CREATE INDEX requests_pending_client ON requests(client_key) WHERE status = 'pending'",
    ),
    # 2 -> 3: the operator-assigned user (Remote-User to upstreams); existing devices have none.
    ("ALTER TABLE devices ADD COLUMN assigned_user TEXT",),
)
SCHEMA_VERSION = len(MIGRATIONS)


def marker_path(path: Path) -> Path:
    """The file that says a store was made at ``path``: it outlives the store being lost.

    Hidden and not prefixed by the store's name, so ``rm edge.sqlite3*`` does not
    take it along.
    """
    return path.with_name(f".{path.name}.created")


class StoreMissing(StoreError):
    """The store file is gone or empty where it once held Edge's data."""


def start_over(path: Path) -> list[Path]:
    """Move the store at ``path`` (and its WAL files) aside and forget it was ever made.

    The deliberate way past ``StoreMissing``: nothing is deleted, the old files
    get a ``.old-<UTC time>`` suffix. Returns where each file went.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            target = source.with_name(f"{source.name}.old-{stamp}")
            source.rename(target)
            moved.append(target)
    with contextlib.suppress(FileNotFoundError):
        marker_path(path).unlink()
    return moved


class SqliteBackend:
    """``Backend`` on a SQLite file; safe for many threads and processes at once."""

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path).absolute()
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        self._claims = InstanceClaims()
        self._prepare_file()
        self._migrate()
        self._identity = self._file_identity()
        self._largest = self._identity[2] if self._identity else 0

    @property
    def description(self) -> str:
        return f"sqlite://{self.path}"

    @property
    def name(self) -> str:
        return f"SQLite store {self.path}"

    # -- connection and schema ------------------------------------------------------------

    def _prepare_file(self) -> None:
        """Create the file if it is new; refuse to start afresh where a store was lost.

        A missing or empty file is only a new store when no store was ever made
        here: otherwise a deleted or truncated store would quietly come back
        empty, every paired device forgotten, with no word in the log.
        """
        if self.path.is_dir():
            raise StoreError(f"SQLite store {self.path} is a directory; set store.url to a file")
        try:
            size: int | None = self.path.stat().st_size
        except FileNotFoundError:
            size = None
        except OSError:
            size = -1  # let opening it report what is wrong
        marker = marker_path(self.path)
        if (size is None or size == 0) and marker.exists():
            state = "is missing" if size is None else "is empty (0 bytes)"
            raise StoreMissing(
                f"SQLite store {self.path} {state}, but {marker} shows it held Edge's devices "
                "before; starting on an empty store would forget every paired device. Restore "
                "the file from a backup, or start over on purpose with `edge store reset` "
                "(or `edge serve --new-store`)"
            )
        try:
            ensure_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:
            return
        except OSError as exc:
            raise StoreError(
                f"SQLite store {self.path}: cannot create it ({exc.strerror or exc}); "
                "check that data_dir is writable by the gateway's user"
            ) from None
        os.fchmod(fd, PRIVATE_FILE_MODE)
        os.close(fd)

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"SQLite store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error("open it", exc) from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        except sqlite3.Error as exc:
            conn.close()
            raise self._error("open it", exc) from None
        self._local.conn = conn
        self._local.pid = os.getpid()
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _migrate(self) -> None:
        try:
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite store {self.path}: cannot switch to WAL mode (got {mode!r}); "
                    "put data_dir on a local file system"
                )
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_identity(conn)
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                for statements in MIGRATIONS[version:]:
                    for statement in statements:
                        conn.execute(statement)
                if version < SCHEMA_VERSION:
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.Error as exc:
            self.close()
            raise self._error("prepare its schema", exc) from None
        except BaseException:
            self.close()
            raise
        if problems != ["ok"]:
            self.close()
            raise self._damaged("; ".join(str(p) for p in problems[:3]))
        self._mark()

    def _file_identity(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_dev, info.st_ino, info.st_size

    def file_problem(self, *, deep: bool) -> str | None:
        """Whether the file this store opened is still there, whole, and the same file.

        SQLite never shrinks its main file here (no VACUUM, no auto_vacuum), so a
        smaller file means someone cut it; another inode means it was replaced.
        """
        now = self._file_identity()
        if now is None:
            return f"SQLite store {self.path} vanished (the file is gone)"
        if self._identity is not None and now[:2] != self._identity[:2]:
            return f"SQLite store {self.path} was replaced by another file"
        size = now[2]
        if size < self._largest:
            return f"SQLite store {self.path} shrank from {self._largest} to {size} bytes"
        self._largest = size
        if deep:
            try:
                rows = self._conn().execute("PRAGMA quick_check").fetchall()
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return None  # another process holds it right now: check again later
                return f"SQLite store {self.path} failed PRAGMA quick_check ({exc})"
            except sqlite3.Error as exc:
                return f"SQLite store {self.path} failed PRAGMA quick_check ({exc})"
            problems = [str(row[0]) for row in rows]
            if problems != ["ok"]:
                return (
                    f"SQLite store {self.path} failed PRAGMA quick_check: {'; '.join(problems[:3])}"
                )
        return None

    def _mark(self) -> None:
        """Leave ``marker_path``: from now on losing this file is refused, not papered over."""
        marker = marker_path(self.path)
        if marker.exists():
            return
        with contextlib.suppress(OSError):  # a read-only data_dir: nothing to protect here
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
            try:
                os.write(fd, f"an Edge pairing store was created at {self.path.name}\n".encode())
            finally:
                os.close(fd)

    def _check_identity(self, conn: sqlite3.Connection) -> None:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        foreign_tables = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchone()[0]
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and foreign_tables):
            raise StoreError(
                f"SQLite store {self.path} is a database of another application, not Edge's; "
                "point store.url at a new file or move this one away"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {self.path} was written by a newer Edge (schema {version}, this "
                f"version knows {SCHEMA_VERSION}); upgrade Edge or restore a backup"
            )

    def _damaged(self, detail: str) -> StoreError:
        return StoreError(
            f"SQLite store {self.path} is damaged or not a database ({detail}); stop the "
            "gateway, move the file away (keep it for inspection) and start again: a new empty "
            "store is created and devices must pair again"
        )

    def _error(self, action: str, exc: sqlite3.Error) -> StoreError:
        if type(exc) is sqlite3.DatabaseError or "malformed" in str(exc):
            return self._damaged(str(exc))  # not a database, or a corrupt page
        hint = "check free disk space and the permissions of data_dir"
        if isinstance(exc, sqlite3.IntegrityError):
            hint = "it conflicts with a stored record; nothing was changed"
        elif "locked" in str(exc) or "busy" in str(exc):
            hint = f"another process held the write lock for over {self._busy_timeout:g} s"
        return StoreError(f"SQLite store {self.path}: cannot {action} ({exc}); {hint}")

    def transact(self, action: str, now: float, step: Callable[[SqliteTx], T]) -> T:
        """``step`` in one write transaction, holding the write lock from its first read."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(action, exc) from None
        try:
            result = step(SqliteTx(conn, self._damaged))
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(action, exc) from None
            raise
        return result

    def read(self, action: str, step: Callable[[SqliteTx], T]) -> T:
        """``step`` on this thread's connection, outside any transaction (the hot path)."""
        try:
            conn = self._conn()
            reader: SqliteTx | None = getattr(self._local, "reader", None)
            if reader is None or reader.conn is not conn:
                reader = self._local.reader = SqliteTx(conn, self._damaged)
            return step(reader)
        except sqlite3.Error as exc:
            raise self._error(action, exc) from None

    def wait_events(self, after: int, timeout: float) -> list[Event]:
        """Poll every 50 ms: SQLite has no notifications across processes.

        A poll reads the event log only when the database may have changed
        since this thread's last empty read for the same ``after``:
        ``PRAGMA data_version`` moves when any other connection (another
        thread, worker or the CLI) commits, and ``total_changes`` when this
        one does. Both are read before the log, so a commit that lands between
        them and the read is seen by the next poll. The values are the
        connection's own, so the connection is part of what is compared.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        start = int(after)

        def poll(r: SqliteTx) -> list[Event]:
            conn = r.conn
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            marker = (conn, start, version, conn.total_changes)
            if getattr(self._local, "quiet", None) == marker:
                return []  # nothing committed since the log last read empty from here
            events = r.events_after(start, 500)
            self._local.quiet = None if events else marker
            return events

        while True:
            events = self.read("read the event log", poll)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0 or self._closed:
                return events
            time.sleep(min(POLL_INTERVAL, remaining))

    def claim(self, purpose: str, seqs: Iterable[int]) -> set[int]:
        """Only the workers of one instance share a SQLite file: every purpose is theirs."""
        return self._claims.claim(purpose, seqs)

    def housekeeping(self, now: float) -> None:
        old = now - RESOLVED_RETENTION

        def trim(tx: SqliteTx) -> None:
            tx.conn.execute(
                "DELETE FROM events WHERE at < ? OR seq <= "
                "(SELECT COALESCE(MAX(seq), 0) FROM events) - ?",
                (now - EVENT_LOG_MAX_AGE, EVENT_LOG_MAX_EVENTS),
            )
            tx.conn.execute(
                "DELETE FROM requests WHERE status != 'pending' AND resolved_at < ?", (old,)
            )
            tx.conn.execute("DELETE FROM invites WHERE COALESCE(used_at, expires_at) < ?", (old,))
            tx.conn.execute(
                "DELETE FROM failures WHERE MAX(window_start, locked_until) < ?", (old,)
            )

        self.transact("trim old records", now, trim)

    def about(self) -> BackendInfo:
        size = self.path.stat().st_size if self.path.exists() else 0
        return BackendInfo(kind="sqlite", schema=SCHEMA_VERSION, file_bytes=size)

    def close(self) -> None:
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # -- migration ------------------------------------------------------------------------------

    def export_snapshot(self) -> StoreSnapshot:
        conn = self._conn()
        rows = SqliteTx(conn, self._damaged)
        try:
            conn.execute("BEGIN")  # one read snapshot of every table
            try:
                devices = conn.execute("SELECT * FROM devices ORDER BY created_at, id").fetchall()
                requests = conn.execute("SELECT * FROM requests ORDER BY created_at, id").fetchall()
                invites = conn.execute("SELECT * FROM invites ORDER BY created_at, id").fetchall()
                failures = conn.execute("SELECT * FROM failures ORDER BY client").fetchall()
                seq = rows.latest_seq()
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error("export the store", exc) from None
        return StoreSnapshot(
            devices=tuple(rows.to_device(row) for row in devices),
            requests=tuple(rows.to_stored(row) for row in requests),
            invites=tuple(rows.to_invite(row) for row in invites),
            failures=tuple(
                FailureCount(row["client"], row["window_start"], row["count"], row["locked_until"])
                for row in failures
            ),
            event_seq=seq,
        )

    def import_snapshot(self, snapshot: StoreSnapshot, *, replace: bool = False) -> None:
        def write(tx: SqliteTx) -> None:
            conn = tx.conn
            if not replace:
                held = conn.execute(
                    "SELECT (SELECT count(*) FROM devices) + (SELECT count(*) FROM requests) + "
                    "(SELECT count(*) FROM invites) + (SELECT count(*) FROM failures) + "
                    "(SELECT count(*) FROM sqlite_sequence WHERE name = 'events' AND seq > 0)"
                ).fetchone()[0]
                if held:
                    raise StoreError(
                        f"SQLite store {self.path} is not empty; refusing to import into it "
                        "(replace its contents explicitly, or use a new file)"
                    )
            for table in ("devices", "requests", "invites", "failures", "events"):
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            for device in snapshot.devices:
                tx.put_device(device)
            for stored in snapshot.requests:
                tx.put_request(stored, keep_until=0.0)
            for invite in snapshot.invites:
                tx.put_invite(invite, keep_until=0.0)
            for failure in snapshot.failures:
                tx.put_failure(failure, keep_until=0.0)
            seq = max(tx.latest_seq(), snapshot.event_seq)
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
            if seq:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (seq,))

        self.transact("import a snapshot", time.time(), write)


class SqliteStore(Ledger):
    """The pairing ``Store`` on a SQLite file."""

    backend: SqliteBackend

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        super().__init__(SqliteBackend(path, busy_timeout=busy_timeout))

    @property
    def path(self) -> Path:
        return self.backend.path
