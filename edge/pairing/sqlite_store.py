"""The default store: one SQLite file shared by every worker process and the CLI.

WAL lets readers run beside the single writer; ``synchronous=FULL`` makes an
acknowledged write survive a crash or ``kill -9``; ``BEGIN IMMEDIATE`` takes
the write lock before the first read of a read-modify-write, so two processes
deciding on the same request are serialised by SQLite itself. Each thread gets
its own connection (SQLite connections are not meant to be shared). The schema
is versioned with ``PRAGMA user_version`` and marked as Edge's with
``PRAGMA application_id``, so a foreign or damaged file is refused with a
clear message instead of being written into.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge.pairing.codes import new_request_id
from edge.pairing.models import (
    PAIRED,
    REVOKED,
    Device,
    Event,
    Invite,
    PairingRequest,
    Role,
    approval_role,
    approved_device,
    device_event_data,
    invite_event_data,
    request_event_data,
)
from edge.pairing.store import (
    EVENT_LOG_MAX_AGE,
    EVENT_LOG_MAX_EVENTS,
    MAX_EVENTS_PER_READ,
    RESOLVED_RETENTION,
    FailureCount,
    PendingCapHit,
    Resolution,
    ResolveStatus,
    Seen,
    StoredRequest,
    StoreError,
    StoreSnapshot,
)
from edge.pairing.tokens import PRIVATE_FILE_MODE, ensure_private_dir

APPLICATION_ID = 0x45444745  # "EDGE"
BUSY_TIMEOUT = 10.0
# SQLite's own page cache, per connection (there is one per thread). Its default of
# about 2 MiB made the gateway's memory grow with the database, times every thread.
# A commit by any other connection empties it anyway, reads that miss it come from
# the OS page cache, and hot lookups are cached above: benchmarks/store.py shows no
# difference between 64 KiB and 256 KiB.
PAGE_CACHE_KIB = 64
POLL_INTERVAL = 0.05
_PENDING = "pending"

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


class SqliteStore:
    """``Store`` on a SQLite file; safe for many threads and processes at once."""

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path).absolute()
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        self._prepare_file()
        self._migrate()
        self._identity = self._file_identity()
        self._largest = self._identity[2] if self._identity else 0

    @property
    def description(self) -> str:
        return f"sqlite://{self.path}"

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

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

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from its first read."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(action, exc) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(action, exc) from None
            raise

    def _query(self, action: str, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(action, exc) from None

    @staticmethod
    def _append(
        conn: sqlite3.Connection, type_: str, data: Mapping[str, object], at: float
    ) -> None:
        conn.execute(
            "INSERT INTO events (type, data, at) VALUES (?, ?, ?)",
            (type_, json.dumps(dict(data), separators=(",", ":")), at),
        )

    def close(self) -> None:
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # -- row conversion -----------------------------------------------------------------------

    def _role(self, value: object) -> Role:
        role = Role.parse(value)
        if role is None:
            raise self._damaged(f"unknown role {value!r} in a stored row")
        return role

    def _device(self, row: sqlite3.Row) -> Device:
        return Device(
            id=row["id"],
            public_key=row["public_key"],
            name=row["name"],
            role=self._role(row["role"]),
            status=row["status"],
            token_hash=row["token_hash"],
            created_at=row["created_at"],
            approved_by=row["approved_by"],
            last_seen_at=row["last_seen_at"],
            last_ip=row["last_ip"],
            revoked_at=row["revoked_at"],
            user=row["assigned_user"],
        )

    def _request(self, row: sqlite3.Row) -> PairingRequest:
        return PairingRequest(
            id=row["id"],
            device_id=row["device_id"],
            public_key=row["public_key"],
            name=row["name"],
            client_ip=row["client_ip"],
            user_agent=row["user_agent"],
            role=self._role(row["role"]),
            reason=row["reason"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            client_key=row["client_key"],
        )

    def _invite(self, row: sqlite3.Row) -> Invite:
        return Invite(
            id=row["id"],
            code_hash=row["code_hash"],
            role=self._role(row["role"]),
            name=row["name"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            created_by=row["created_by"],
            used_at=row["used_at"],
            used_by_device=row["used_by_device"],
        )

    def _device_in(self, conn: sqlite3.Connection, device_id: str) -> Device | None:
        row = conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()
        return None if row is None else self._device(row)

    @staticmethod
    def _upsert_device(conn: sqlite3.Connection, device: Device) -> None:
        conn.execute(
            "INSERT INTO devices (id, public_key, name, role, status, token_hash, created_at, "
            "approved_by, last_seen_at, last_ip, revoked_at, assigned_user) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET public_key = excluded.public_key, "
            "name = excluded.name, role = excluded.role, status = excluded.status, "
            "token_hash = excluded.token_hash, created_at = excluded.created_at, "
            "approved_by = excluded.approved_by, last_seen_at = excluded.last_seen_at, "
            "last_ip = excluded.last_ip, revoked_at = excluded.revoked_at, "
            "assigned_user = excluded.assigned_user",
            (
                device.id,
                device.public_key,
                device.name,
                device.role.value,
                device.status,
                device.token_hash,
                device.created_at,
                device.approved_by,
                device.last_seen_at,
                device.last_ip,
                device.revoked_at,
                device.user,
            ),
        )

    def _settle(
        self,
        conn: sqlite3.Connection,
        request: PairingRequest,
        decision: str,
        actor: str,
        now: float,
        **extra: object,
    ) -> None:
        conn.execute(
            "UPDATE requests SET status = ?, resolved_at = ?, resolved_by = ? WHERE id = ?",
            (decision, now, actor, request.id),
        )
        self._append(
            conn,
            "pairing.resolved",
            request_event_data(request, decision=decision, actor=actor, **extra),
            now,
        )

    def _settle_pending_of(
        self, conn: sqlite3.Connection, device_id: str, decision: str, actor: str, now: float
    ) -> None:
        row = conn.execute(
            "SELECT * FROM requests WHERE device_id = ? AND status = 'pending'",
            (device_id,),
        ).fetchone()
        if row is not None:
            self._settle(conn, self._request(row), decision, actor, now)

    # -- devices ------------------------------------------------------------------------------

    def get_device(self, device_id: str) -> Device | None:
        rows = self._query("read a device", "SELECT * FROM devices WHERE id = ?", (device_id,))
        return self._device(rows[0]) if rows else None

    def device_for_token(self, token_hash: str) -> Device | None:
        rows = self._query(
            "read a device",
            "SELECT * FROM devices WHERE token_hash = ?",
            (token_hash,),
        )
        return self._device(rows[0]) if rows else None

    def list_devices(self, *, include_revoked: bool = False) -> list[Device]:
        if include_revoked:
            query = "SELECT * FROM devices ORDER BY created_at, id"
            rows = self._query("list devices", query)
        else:
            query = "SELECT * FROM devices WHERE status = ? ORDER BY created_at, id"
            rows = self._query("list devices", query, (PAIRED,))
        return [self._device(row) for row in rows]

    def pair_device(self, device: Device, *, actor: str, now: float) -> None:
        with self._write("pair a device") as conn:
            existing = self._device_in(conn, device.id)
            self._upsert_device(conn, device)
            self._append(
                conn,
                "device.paired",
                device_event_data(
                    device,
                    actor,
                    previous_status=existing.status if existing else None,
                    previous_role=existing.role.value if existing else None,
                ),
                now,
            )
            self._settle_pending_of(conn, device.id, "approved", actor, now)

    def replace_token(
        self,
        device_id: str,
        *,
        expected_hash: str | None,
        new_hash: str,
        actor: str,
        reason: str,
        now: float,
    ) -> Device | None:
        with self._write("replace a device token") as conn:
            device = self._device_in(conn, device_id)
            if device is None or not device.is_paired or device.token_hash != expected_hash:
                return None
            conn.execute("UPDATE devices SET token_hash = ? WHERE id = ?", (new_hash, device_id))
            self._append(
                conn, "device.token_rotated", device_event_data(device, actor, reason=reason), now
            )
        return replace(device, token_hash=new_hash)

    def revoke_device(self, device_id: str, *, actor: str, now: float) -> Device | None:
        with self._write("revoke a device") as conn:
            device = self._device_in(conn, device_id)
            if device is None or device.status == REVOKED:
                return None
            conn.execute(
                "UPDATE devices SET status = ?, revoked_at = ? WHERE id = ?",
                (REVOKED, now, device_id),
            )
            self._append(conn, "device.revoked", device_event_data(device, actor), now)
            self._settle_pending_of(conn, device_id, "rejected", actor, now)
        return replace(device, status=REVOKED, revoked_at=now)

    def assign_user(
        self, device_id: str, user: str | None, *, actor: str, now: float
    ) -> Device | None:
        with self._write("assign a user") as conn:
            device = self._device_in(conn, device_id)
            if device is None:
                return None
            conn.execute("UPDATE devices SET assigned_user = ? WHERE id = ?", (user, device_id))
            assigned = replace(device, user=user)
            self._append(
                conn,
                "device.user_assigned",
                device_event_data(assigned, actor, previous_user=device.user),
                now,
            )
        return assigned

    def rename_device(self, device_id: str, name: str, *, actor: str, now: float) -> Device | None:
        with self._write("rename a device") as conn:
            device = self._device_in(conn, device_id)
            if device is None:
                return None
            conn.execute("UPDATE devices SET name = ? WHERE id = ?", (name, device_id))
            renamed = replace(device, name=name)
            self._append(
                conn,
                "device.renamed",
                device_event_data(renamed, actor, previous_name=device.name),
                now,
            )
        return renamed

    def record_seen(self, seen: Mapping[str, Seen]) -> None:
        if not seen:
            return
        with self._write("record last-seen times") as conn:
            conn.executemany(
                "UPDATE devices SET last_seen_at = MAX(COALESCE(last_seen_at, 0), ?), "
                "last_ip = COALESCE(?, last_ip) WHERE id = ?",
                [(item.at, item.ip, device_id) for device_id, item in seen.items()],
            )

    def expire_idle_devices(self, idle_before: float, *, now: float) -> list[Device]:
        query = (
            "SELECT * FROM devices WHERE COALESCE(last_seen_at, created_at) < ? ORDER BY created_at"
        )
        if not self._query("find idle devices", query, (idle_before,)):
            return []
        with self._write("expire idle devices") as conn:
            idle = [self._device(row) for row in conn.execute(query, (idle_before,)).fetchall()]
            for device in idle:
                conn.execute("DELETE FROM devices WHERE id = ?", (device.id,))
                self._append(
                    conn,
                    "device.expired",
                    device_event_data(device, "sweep", last_seen_at=device.last_seen_at),
                    now,
                )
        return idle

    # -- pairing requests -----------------------------------------------------------------------

    def open_request(
        self, candidate: PairingRequest, *, max_pending: int, max_pending_per_client: int
    ) -> PairingRequest | PendingCapHit:
        now = candidate.created_at
        with self._write("open a pairing request") as conn:
            row = conn.execute(
                "SELECT * FROM requests WHERE device_id = ? AND status = 'pending'",
                (candidate.device_id,),
            ).fetchone()
            if row is not None:
                existing = self._request(row)
                if not existing.expired(now):
                    return self._refresh(conn, existing, candidate)
                self._settle(conn, existing, "expired", "sweep", now)
            per_client = conn.execute(
                "SELECT count(*) FROM requests WHERE status = 'pending' AND expires_at > ? "
                "AND client_key IS ?",
                (now, candidate.client_key),
            ).fetchone()[0]
            if per_client >= max_pending_per_client:
                return PendingCapHit("max_pending_per_client", max_pending_per_client)
            total = conn.execute(
                "SELECT count(*) FROM requests WHERE status = 'pending' AND expires_at > ?",
                (now,),
            ).fetchone()[0]
            if total >= max_pending:
                return PendingCapHit("max_pending", max_pending)
            request_id = candidate.id
            while conn.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone():
                request_id = new_request_id()
            request = replace(candidate, id=request_id)
            conn.execute(
                "INSERT INTO requests (id, device_id, public_key, name, client_ip, user_agent, "
                "role, reason, created_at, expires_at, client_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.id,
                    request.device_id,
                    request.public_key,
                    request.name,
                    request.client_ip,
                    request.user_agent,
                    request.role.value,
                    request.reason,
                    request.created_at,
                    request.expires_at,
                    request.client_key,
                ),
            )
            self._append(
                conn,
                "pairing.requested",
                request_event_data(request, expires_at=request.expires_at),
                now,
            )
        return request

    def _refresh(
        self, conn: sqlite3.Connection, existing: PairingRequest, candidate: PairingRequest
    ) -> PairingRequest:
        refreshed = replace(candidate, id=existing.id, created_at=existing.created_at)
        conn.execute(
            "UPDATE requests SET public_key = ?, name = ?, client_ip = ?, user_agent = ?, "
            "role = ?, reason = ?, expires_at = ?, client_key = ? WHERE id = ?",
            (
                refreshed.public_key,
                refreshed.name,
                refreshed.client_ip,
                refreshed.user_agent,
                refreshed.role.value,
                refreshed.reason,
                refreshed.expires_at,
                refreshed.client_key,
                refreshed.id,
            ),
        )
        changed = (existing.role, existing.reason, existing.name) != (
            refreshed.role,
            refreshed.reason,
            refreshed.name,
        )
        if changed:
            self._append(
                conn,
                "pairing.requested",
                request_event_data(refreshed, expires_at=refreshed.expires_at, refreshed=True),
                candidate.created_at,
            )
        return refreshed

    def get_request(self, request_id: str) -> PairingRequest | None:
        rows = self._query(
            "read a pairing request",
            "SELECT * FROM requests WHERE id = ? AND status = 'pending'",
            (request_id,),
        )
        return self._request(rows[0]) if rows else None

    def list_requests(self, now: float) -> list[PairingRequest]:
        rows = self._query(
            "list pairing requests",
            "SELECT * FROM requests WHERE status = 'pending' AND expires_at > ? "
            "ORDER BY created_at, id",
            (now,),
        )
        return [self._request(row) for row in rows]

    def resolve_request(
        self,
        request_id: str,
        *,
        approve: bool,
        role: Role | None,
        actor: str,
        now: float,
        user: str | None = None,
    ) -> Resolution:
        with self._write("resolve a pairing request") as conn:
            row = conn.execute(
                "SELECT * FROM requests WHERE id = ?",
                (request_id,),
            ).fetchone()
            if row is None:
                return Resolution(ResolveStatus.NOT_FOUND)
            request = self._request(row)
            if row["status"] != _PENDING:
                return Resolution(
                    ResolveStatus.ALREADY_RESOLVED,
                    request,
                    decision=row["status"],
                    resolved_by=row["resolved_by"],
                )
            if request.expired(now):
                self._settle(conn, request, "expired", "sweep", now)
                return Resolution(
                    ResolveStatus.EXPIRED, request, decision="expired", resolved_by="sweep"
                )
            if not approve:
                self._settle(conn, request, "rejected", actor, now)
                return Resolution(
                    ResolveStatus.RESOLVED, request, decision="rejected", resolved_by=actor
                )
            existing = self._device_in(conn, request.device_id)
            granted = approval_role(existing, request.role, role)
            device = approved_device(
                existing,
                device_id=request.device_id,
                public_key=request.public_key,
                name=request.name,
                role=granted,
                approved_by=actor,
                now=now,
                user=user,
            )
            self._upsert_device(conn, device)
            self._settle(conn, request, "approved", actor, now, granted_role=granted.value)
        return Resolution(
            ResolveStatus.RESOLVED, request, device, decision="approved", resolved_by=actor
        )

    def expire_requests(self, now: float) -> list[PairingRequest]:
        query = (
            "SELECT * FROM requests WHERE status = 'pending' AND expires_at <= ? "
            "ORDER BY created_at"
        )
        if not self._query("find expired pairing requests", query, (now,)):
            return []
        with self._write("expire pairing requests") as conn:
            expired = [self._request(r) for r in conn.execute(query, (now,)).fetchall()]
            for request in expired:
                self._settle(conn, request, "expired", "sweep", now)
        return expired

    # -- invites --------------------------------------------------------------------------------

    def add_invite(self, invite: Invite) -> None:
        with self._write("create an invite") as conn:
            conn.execute(
                "INSERT INTO invites (id, code_hash, role, name, created_at, expires_at, "
                "created_by, used_at, used_by_device) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    invite.id,
                    invite.code_hash,
                    invite.role.value,
                    invite.name,
                    invite.created_at,
                    invite.expires_at,
                    invite.created_by,
                    invite.used_at,
                    invite.used_by_device,
                ),
            )
            self._append(
                conn,
                "invite.created",
                invite_event_data(invite, invite.created_by),
                invite.created_at,
            )

    def list_invites(self) -> list[Invite]:
        rows = self._query("list invites", "SELECT * FROM invites ORDER BY created_at, id")
        return [self._invite(row) for row in rows]

    def cancel_invite(self, invite_id: str, *, actor: str, now: float) -> Invite | None:
        with self._write("cancel an invite") as conn:
            row = conn.execute(
                "SELECT * FROM invites WHERE id = ? AND used_at IS NULL",
                (invite_id,),
            ).fetchone()
            if row is None:
                return None
            invite = self._invite(row)
            conn.execute("DELETE FROM invites WHERE id = ?", (invite_id,))
            self._append(conn, "invite.cancelled", invite_event_data(invite, actor), now)
        return invite

    def redeem_invite(
        self,
        code_hash: str,
        *,
        device_id: str,
        public_key: str,
        name: str,
        token_hash: str,
        now: float,
    ) -> Device | None:
        with self._write("redeem an invite") as conn:
            row = conn.execute("SELECT * FROM invites WHERE code_hash = ?", (code_hash,)).fetchone()
            if row is None:
                return None
            invite = self._invite(row)
            if not invite.usable(now):
                return None
            conn.execute(
                "UPDATE invites SET used_at = ?, used_by_device = ? WHERE id = ?",
                (now, device_id, invite.id),
            )
            existing = self._device_in(conn, device_id)
            actor = f"{invite.created_by} (invite {invite.id})"
            device = approved_device(
                existing,
                device_id=device_id,
                public_key=public_key,
                name=invite.name or name,
                role=approval_role(existing, invite.role, None),
                approved_by=actor,
                now=now,
                token_hash=token_hash,
            )
            self._upsert_device(conn, device)
            self._append(
                conn,
                "invite.used",
                invite_event_data(
                    invite,
                    actor,
                    device_id=device.id,
                    device_name=device.name,
                    granted_role=device.role.value,
                ),
                now,
            )
            self._settle_pending_of(conn, device_id, "approved", actor, now)
        return device

    # -- failed attempts ------------------------------------------------------------------------

    def record_failure(
        self, client: str, *, now: float, window: float, threshold: int, lockout: float
    ) -> float | None:
        with self._write("count a failed attempt") as conn:
            row = conn.execute(
                "SELECT window_start, count, locked_until FROM failures WHERE client = ?",
                (client,),
            ).fetchone()
            locked_until = float(row["locked_until"]) if row else 0.0
            if row is None or now - row["window_start"] >= window:
                window_start, count = now, 1
            else:
                window_start, count = float(row["window_start"]), int(row["count"]) + 1
            started: float | None = None
            if locked_until <= now and count >= threshold:
                started = locked_until = now + lockout
                self._append(
                    conn,
                    "auth.lockout",
                    {"client": client, "failures": count, "until": started, "lockout": lockout},
                    now,
                )
                window_start, count = now, 0
            conn.execute(
                "INSERT INTO failures (client, window_start, count, locked_until) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(client) DO UPDATE SET "
                "window_start = excluded.window_start, count = excluded.count, "
                "locked_until = excluded.locked_until",
                (client, window_start, count, locked_until),
            )
        return started

    def locked_until(self, client: str) -> float:
        rows = self._query(
            "read a lockout", "SELECT locked_until FROM failures WHERE client = ?", (client,)
        )
        return float(rows[0][0]) if rows else 0.0

    # -- events ---------------------------------------------------------------------------------

    def latest_seq(self) -> int:
        rows = self._query(
            "read the event log", "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        )
        return int(rows[0][0]) if rows else 0

    def events_after(self, seq: int, limit: int = 500) -> list[Event]:
        limit = max(1, min(int(limit), MAX_EVENTS_PER_READ))
        rows = self._query(
            "read the event log",
            "SELECT seq, type, data, at FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (int(seq), limit),
        )
        events = []
        for row in rows:
            try:
                data = json.loads(row["data"])
            except ValueError:
                raise self._damaged(f"event {row['seq']} holds no JSON") from None
            events.append(Event(seq=row["seq"], type=row["type"], data=data, at=row["at"]))
        return events

    def wait_events(self, after: int, timeout: float) -> list[Event]:
        """Poll every 50 ms: SQLite has no notifications across processes."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            events = self.events_after(after)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0 or self._closed:
                return events
            time.sleep(min(POLL_INTERVAL, remaining))

    # -- upkeep ---------------------------------------------------------------------------------

    def counts(self, now: float) -> tuple[int, dict[str, int]]:
        pending = self._query(
            "count pairing requests",
            "SELECT count(*) FROM requests WHERE status = 'pending' AND expires_at > ?",
            (now,),
        )[0][0]
        by_role = {role.value: 0 for role in Role}
        for row in self._query(
            "count devices",
            "SELECT role, count(*) FROM devices WHERE status = ? GROUP BY role",
            (PAIRED,),
        ):
            by_role[str(row[0])] = int(row[1])
        return int(pending), by_role

    def housekeeping(self, now: float) -> None:
        old = now - RESOLVED_RETENTION
        with self._write("trim old records") as conn:
            conn.execute(
                "DELETE FROM events WHERE at < ? OR seq <= "
                "(SELECT COALESCE(MAX(seq), 0) FROM events) - ?",
                (now - EVENT_LOG_MAX_AGE, EVENT_LOG_MAX_EVENTS),
            )
            conn.execute(
                "DELETE FROM requests WHERE status != 'pending' AND resolved_at < ?", (old,)
            )
            conn.execute("DELETE FROM invites WHERE COALESCE(used_at, expires_at) < ?", (old,))
            conn.execute("DELETE FROM failures WHERE MAX(window_start, locked_until) < ?", (old,))

    # -- migration ------------------------------------------------------------------------------

    def export_snapshot(self) -> StoreSnapshot:
        conn = self._conn()
        try:
            conn.execute("BEGIN")  # one read snapshot of every table
            try:
                devices = conn.execute("SELECT * FROM devices ORDER BY created_at, id").fetchall()
                requests = conn.execute("SELECT * FROM requests ORDER BY created_at, id").fetchall()
                invites = conn.execute("SELECT * FROM invites ORDER BY created_at, id").fetchall()
                failures = conn.execute("SELECT * FROM failures ORDER BY client").fetchall()
                seq = conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error("export the store", exc) from None
        return StoreSnapshot(
            devices=tuple(self._device(row) for row in devices),
            requests=tuple(
                StoredRequest(
                    self._request(row), row["status"], row["resolved_at"], row["resolved_by"]
                )
                for row in requests
            ),
            invites=tuple(self._invite(row) for row in invites),
            failures=tuple(
                FailureCount(row["client"], row["window_start"], row["count"], row["locked_until"])
                for row in failures
            ),
            event_seq=int(seq[0][0]) if seq else 0,
        )

    def import_snapshot(self, snapshot: StoreSnapshot, *, replace: bool = False) -> None:
        with self._write("import a snapshot") as conn:
            tables = ("devices", "requests", "invites", "failures", "events")
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
            for table in tables:
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            for device in snapshot.devices:
                self._upsert_device(conn, device)
            conn.executemany(
                "INSERT INTO requests (id, device_id, public_key, name, client_ip, user_agent, "
                "role, reason, created_at, expires_at, status, resolved_at, resolved_by, "
                "client_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.request.id,
                        r.request.device_id,
                        r.request.public_key,
                        r.request.name,
                        r.request.client_ip,
                        r.request.user_agent,
                        r.request.role.value,
                        r.request.reason,
                        r.request.created_at,
                        r.request.expires_at,
                        r.status,
                        r.resolved_at,
                        r.resolved_by,
                        r.request.client_key,
                    )
                    for r in snapshot.requests
                ],
            )
            conn.executemany(
                "INSERT INTO invites (id, code_hash, role, name, created_at, expires_at, "
                "created_by, used_at, used_by_device) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i.id,
                        i.code_hash,
                        i.role.value,
                        i.name,
                        i.created_at,
                        i.expires_at,
                        i.created_by,
                        i.used_at,
                        i.used_by_device,
                    )
                    for i in snapshot.invites
                ],
            )
            conn.executemany(
                "INSERT INTO failures (client, window_start, count, locked_until) "
                "VALUES (?, ?, ?, ?)",
                [(f.client, f.window_start, f.count, f.locked_until) for f in snapshot.failures],
            )
            current = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()
            seq = max(int(current[0]) if current else 0, snapshot.event_seq)
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
            if seq:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (seq,))
