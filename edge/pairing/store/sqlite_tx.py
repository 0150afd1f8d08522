"""The SQLite ``Tx``: rows in, records out, on one connection inside (or outside) a transaction.

Only storage lives here: which row holds a record, and the queries that find
records by what the ledger asks (``pending_of``, ``inactive_devices``...).
What to do with them is decided in ``ledger.py``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Mapping

from edge.pairing.models import PAIRED, Device, Event, Invite, PairingRequest, Role
from edge.pairing.store.base import FailureCount, StoredRequest, StoreError
from edge.request_ids import stamped

IN_BATCH = 500  # ids per "IN (...)" query, far below SQLite's limit on parameters

_DEVICE_COLUMNS = (
    "id, public_key, name, role, status, token_hash, created_at, approved_by, last_seen_at, "
    "last_ip, revoked_at, assigned_user"
)
_REQUEST_COLUMNS = (
    "id, device_id, public_key, name, client_ip, user_agent, role, reason, created_at, "
    "expires_at, status, resolved_at, resolved_by, client_key"
)
_INVITE_COLUMNS = (
    "id, code_hash, role, name, created_at, expires_at, created_by, used_at, used_by_device"
)


def _upsert(table: str, columns: str, key: str) -> str:
    names = [c.strip() for c in columns.split(",")]
    updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != key)
    marks = ", ".join("?" for _ in names)
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) "  # noqa: S608 - fixed names
        f"ON CONFLICT({key}) DO UPDATE SET {updates}"
    )


_UPSERT_DEVICE = _upsert("devices", _DEVICE_COLUMNS, "id")
_UPSERT_REQUEST = _upsert("requests", _REQUEST_COLUMNS, "id")
_UPSERT_INVITE = _upsert("invites", _INVITE_COLUMNS, "id")
_UPSERT_FAILURE = _upsert("failures", "client, window_start, count, locked_until", "client")


class SqliteTx:
    """Reads and writes on ``conn``; atomic when the backend has begun a transaction on it."""

    def __init__(self, conn: sqlite3.Connection, damaged: Callable[[str], StoreError]) -> None:
        self.conn = conn
        self._damaged = damaged

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    # -- rows to records ----------------------------------------------------------------------

    def role(self, value: object) -> Role:
        role = Role.parse(value)
        if role is None:
            raise self._damaged(f"unknown role {value!r} in a stored row")
        return role

    def to_device(self, row: sqlite3.Row) -> Device:
        return Device(
            id=row["id"],
            public_key=row["public_key"],
            name=row["name"],
            role=self.role(row["role"]),
            status=row["status"],
            token_hash=row["token_hash"],
            created_at=row["created_at"],
            approved_by=row["approved_by"],
            last_seen_at=row["last_seen_at"],
            last_ip=row["last_ip"],
            revoked_at=row["revoked_at"],
            user=row["assigned_user"],
        )

    def to_request(self, row: sqlite3.Row) -> PairingRequest:
        return PairingRequest(
            id=row["id"],
            device_id=row["device_id"],
            public_key=row["public_key"],
            name=row["name"],
            client_ip=row["client_ip"],
            user_agent=row["user_agent"],
            role=self.role(row["role"]),
            reason=row["reason"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            client_key=row["client_key"],
        )

    def to_stored(self, row: sqlite3.Row) -> StoredRequest:
        return StoredRequest(
            self.to_request(row), row["status"], row["resolved_at"], row["resolved_by"]
        )

    def to_invite(self, row: sqlite3.Row) -> Invite:
        return Invite(
            id=row["id"],
            code_hash=row["code_hash"],
            role=self.role(row["role"]),
            name=row["name"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            created_by=row["created_by"],
            used_at=row["used_at"],
            used_by_device=row["used_by_device"],
        )

    # -- reads --------------------------------------------------------------------------------

    def _row(self, sql: str, params: tuple[object, ...]) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def device(self, device_id: str) -> Device | None:
        row = self._row("SELECT * FROM devices WHERE id = ?", (device_id,))
        return None if row is None else self.to_device(row)

    def devices(self, device_ids: Collection[str]) -> dict[str, Device]:
        ids = list(device_ids)
        found: dict[str, Device] = {}
        for start in range(0, len(ids), IN_BATCH):
            batch = ids[start : start + IN_BATCH]
            marks = ", ".join("?" for _ in batch)
            query = f"SELECT * FROM devices WHERE id IN ({marks})"  # noqa: S608 - only marks
            for row in self._rows(query, tuple(batch)):
                found[row["id"]] = self.to_device(row)
        return found

    def device_for_token(self, token_hash: str) -> Device | None:
        row = self._row("SELECT * FROM devices WHERE token_hash = ?", (token_hash,))
        return None if row is None else self.to_device(row)

    def list_devices(self, *, include_revoked: bool) -> list[Device]:
        if include_revoked:
            rows = self._rows("SELECT * FROM devices ORDER BY created_at, id")
        else:
            rows = self._rows(
                "SELECT * FROM devices WHERE status = ? ORDER BY created_at, id", (PAIRED,)
            )
        return [self.to_device(row) for row in rows]

    def inactive_devices(self, before: float) -> list[Device]:
        rows = self._rows(
            "SELECT * FROM devices WHERE COALESCE(last_seen_at, created_at) < ? "
            "ORDER BY created_at, id",
            (before,),
        )
        return [self.to_device(row) for row in rows]

    def request(self, request_id: str) -> StoredRequest | None:
        rows = self._rows("SELECT * FROM requests WHERE id = ?", (request_id,))
        return self.to_stored(rows[0]) if rows else None

    def pending_of(self, device_id: str) -> PairingRequest | None:
        rows = self._rows(
            "SELECT * FROM requests WHERE device_id = ? AND status = 'pending'", (device_id,)
        )
        return self.to_request(rows[0]) if rows else None

    def pending_requests(self, now: float) -> list[PairingRequest]:
        rows = self._rows(
            "SELECT * FROM requests WHERE status = 'pending' AND expires_at > ? "
            "ORDER BY created_at, id",
            (now,),
        )
        return [self.to_request(row) for row in rows]

    def last_settled_of(self, device_id: str) -> StoredRequest | None:
        rows = self._rows(
            "SELECT * FROM requests WHERE device_id = ? AND status != 'pending' "
            "ORDER BY resolved_at DESC LIMIT 1",
            (device_id,),
        )
        return self.to_stored(rows[0]) if rows else None

    def expired_requests(self, now: float) -> list[PairingRequest]:
        rows = self._rows(
            "SELECT * FROM requests WHERE status = 'pending' AND expires_at <= ? "
            "ORDER BY created_at, id",
            (now,),
        )
        return [self.to_request(row) for row in rows]

    def pending_below(self, limit: int, now: float) -> bool:
        count = self._rows(
            "SELECT count(*) FROM requests WHERE status = 'pending' AND expires_at > ?", (now,)
        )[0][0]
        return int(count) < limit

    def client_pending_below(self, client_key: str | None, limit: int, now: float) -> bool:
        count = self._rows(
            "SELECT count(*) FROM requests WHERE status = 'pending' AND expires_at > ? "
            "AND client_key IS ?",
            (now, client_key),
        )[0][0]
        return int(count) < limit

    def invite(self, invite_id: str) -> Invite | None:
        rows = self._rows("SELECT * FROM invites WHERE id = ?", (invite_id,))
        return self.to_invite(rows[0]) if rows else None

    def invite_by_code(self, code_hash: str) -> Invite | None:
        rows = self._rows("SELECT * FROM invites WHERE code_hash = ?", (code_hash,))
        return self.to_invite(rows[0]) if rows else None

    def list_invites(self) -> list[Invite]:
        rows = self._rows("SELECT * FROM invites ORDER BY created_at, id")
        return [self.to_invite(row) for row in rows]

    def failure(self, client: str) -> FailureCount | None:
        row = self._row(
            "SELECT window_start, count, locked_until FROM failures WHERE client = ?", (client,)
        )
        if row is None:
            return None
        return FailureCount(
            client, float(row["window_start"]), int(row["count"]), float(row["locked_until"])
        )

    def failures(self) -> list[FailureCount]:
        rows = self._rows("SELECT client, window_start, count, locked_until FROM failures")
        return [
            FailureCount(
                row["client"],
                float(row["window_start"]),
                int(row["count"]),
                float(row["locked_until"]),
            )
            for row in rows
        ]

    def latest_seq(self) -> int:
        rows = self._rows("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(rows[0][0]) if rows else 0

    def events_after(self, seq: int, limit: int) -> list[Event]:
        rows = self._rows(
            "SELECT seq, type, data, at FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        events = []
        for row in rows:
            try:
                data = json.loads(row["data"])
            except ValueError:
                raise self._damaged(f"event {row['seq']} holds no JSON") from None
            events.append(Event(seq=row["seq"], type=row["type"], data=data, at=row["at"]))
        return events

    def counts(self, now: float) -> tuple[int, dict[str, int]]:
        pending = self._rows(
            "SELECT count(*) FROM requests WHERE status = 'pending' AND expires_at > ?", (now,)
        )[0][0]
        by_role = {role.value: 0 for role in Role}
        for row in self._rows(
            "SELECT role, count(*) FROM devices WHERE status = ? GROUP BY role", (PAIRED,)
        ):
            by_role[str(row[0])] = int(row[1])
        return int(pending), by_role

    # -- writes -------------------------------------------------------------------------------

    def put_device(self, device: Device) -> None:
        self.conn.execute(
            _UPSERT_DEVICE,
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

    def delete_device(self, device: Device) -> None:
        self.conn.execute("DELETE FROM devices WHERE id = ?", (device.id,))

    def put_request(self, stored: StoredRequest, *, keep_until: float) -> None:
        """``keep_until`` is the housekeeping sweep's to decide here (by ``resolved_at``)."""
        request = stored.request
        self.conn.execute(
            _UPSERT_REQUEST,
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
                stored.status,
                stored.resolved_at,
                stored.resolved_by,
                request.client_key,
            ),
        )

    def put_invite(self, invite: Invite, *, keep_until: float) -> None:
        self.conn.execute(
            _UPSERT_INVITE,
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

    def delete_invite(self, invite: Invite) -> None:
        self.conn.execute("DELETE FROM invites WHERE id = ?", (invite.id,))

    def put_failure(self, failure: FailureCount, *, keep_until: float) -> None:
        self.conn.execute(
            _UPSERT_FAILURE,
            (failure.client, failure.window_start, failure.count, failure.locked_until),
        )

    def append(self, type_: str, data: Mapping[str, object], at: float) -> None:
        self.conn.execute(
            "INSERT INTO events (type, data, at) VALUES (?, ?, ?)",
            (type_, json.dumps(dict(stamped(data)), separators=(",", ":")), at),
        )
