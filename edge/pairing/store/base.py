"""The storage contract of the pairing domain: value types, the ``Store`` and the ``Backend``.

A store keeps devices, pending requests, invites, failure counters and an
append-only event log. Every method that changes something does it in one
atomic step *together with* the events describing the change, so the log is
never ahead of or behind the data: a watcher that sees ``device.revoked``
finds the device revoked. Decisions that need a read and a write (two
operators approving one request, two clients racing for one invite, the
pending caps) happen inside that step, never as read-then-write in Python.

The split: ``Store`` is what the rest of Edge calls; ``ledger.Ledger`` is its
one implementation, where every decision is written once as a step over a
``Tx``. A ``Backend`` only stores: it runs a step atomically
(``transact``), answers plain reads, waits for events and claims events for
one process. SQLite (``sqlite.py``) and Redis (``redis.py``) are held to the
same contract tests (``tests/pairing/test_pairing_store_contract.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from edge.pairing.models import Device, Event, Invite, PairingRequest, Role
from edge.pairing.store.outcomes import Counted, Declined, PendingCapHit, ResolveOutcome

T = TypeVar("T")

DEFAULT_SQLITE_NAME = "edge.sqlite3"
EVENT_LOG_MAX_EVENTS = 10_000
EVENT_LOG_MAX_AGE = 86_400.0
RESOLVED_RETENTION = 86_400.0  # resolved requests are kept this long to answer "already resolved"
MAX_EVENTS_PER_READ = 10_000


# Which processes share one event for a purpose (``Backend.claim``): the audit line and
# metrics of an event are written once per instance (every worker of one ``edge serve``);
# a webhook is sent once over every process on the store, replicas included.
CLAIM_AUDIT = "audit"
CLAIM_NOTIFY = "notify"
INSTANCE_CLAIMS = frozenset({CLAIM_AUDIT})
PENDING = "pending"


class StoreError(Exception):
    """The store cannot be used; the message names it and says what to do."""


@dataclass(frozen=True)
class Seen:
    """A batched last-seen update for one device; ``ip`` None keeps the stored one."""

    at: float
    ip: str | None


@dataclass(frozen=True)
class StoredRequest:
    """A pairing request as a store keeps it: pending, or settled with its decision."""

    request: PairingRequest
    status: str  # "pending", "approved", "rejected" or "expired"
    resolved_at: float | None = None
    resolved_by: str | None = None


@dataclass(frozen=True)
class FailureCount:
    """The failed-attempt counter of one client address."""

    client: str
    window_start: float
    count: int
    locked_until: float


@dataclass(frozen=True)
class StoreSnapshot:
    """Everything a store holds except the event log itself (whose position is kept).

    What ``edge store migrate`` copies from one backend to another.
    """

    devices: tuple[Device, ...]
    requests: tuple[StoredRequest, ...]
    invites: tuple[Invite, ...]
    failures: tuple[FailureCount, ...]
    event_seq: int

    @property
    def empty(self) -> bool:
        return not (self.devices or self.requests or self.invites or self.failures) and (
            self.event_seq == 0
        )


@dataclass(frozen=True)
class RedisInfo:
    """What ``edge store info`` shows about the Redis server behind the store."""

    version: str
    appendonly: bool
    appendfsync: str
    maxmemory_policy: str
    role: str
    event_log_length: int


@dataclass(frozen=True)
class BackendInfo:
    """What a backend says about itself for ``edge store info``."""

    kind: str  # "sqlite" or "redis"
    schema: int
    file_bytes: int | None = None
    server: RedisInfo | None = None


@runtime_checkable
class SnapshotStore(Protocol):
    """A store that can be copied whole: every backend, for ``edge store migrate``."""

    @property
    def description(self) -> str: ...

    def export_snapshot(self) -> StoreSnapshot:
        """A consistent copy of every record and the latest event seq."""
        ...

    def import_snapshot(self, snapshot: StoreSnapshot, *, replace: bool = False) -> None:
        """Write ``snapshot`` in one step, without events; the event seq becomes at least its seq.

        Refused (StoreError) when the store holds anything and ``replace`` is
        False; with ``replace`` everything it held is dropped first.
        """
        ...


@runtime_checkable
class Store(Protocol):
    """Persistence for the pairing domain. All times are epoch seconds given by the caller.

    Events each mutator appends (``data`` never holds a token, code or hash):
    ``pair_device`` -> ``device.paired`` and, if the device had a pending
    request, ``pairing.resolved`` (approved); ``replace_token`` ->
    ``device.token_rotated``; ``revoke_device`` -> ``device.revoked`` (plus
    ``pairing.resolved`` rejected for its pending request); ``rename_device``
    -> ``device.renamed``; ``assign_user`` -> ``device.user_assigned``;
    ``expire_idle_devices`` -> ``device.expired``;
    ``open_request`` -> ``pairing.requested`` (also when a refresh changed the
    role, reason or name, with ``refreshed: true``); ``resolve_request`` and
    ``expire_requests`` -> ``pairing.resolved`` with ``decision``;
    ``add_invite``/``redeem_invite``/``cancel_invite`` -> ``invite.created``/
    ``invite.used``/``invite.cancelled``; ``record_failure`` and
    ``count_failure`` -> ``auth.lockout`` when they start one; ``unlock`` ->
    ``auth.unlocked``.
    """

    @property
    def description(self) -> str:
        """Where the data lives, for logs and ``edge doctor`` (never a password)."""
        ...

    # -- devices ------------------------------------------------------------------

    def get_device(self, device_id: str) -> Device | None: ...

    def device_for_token(self, token_hash: str) -> Device | None:
        """The device (paired or revoked) whose current token has this hash."""
        ...

    def list_devices(self, *, include_revoked: bool = False) -> list[Device]:
        """Devices, oldest first."""
        ...

    def pair_device(self, device: Device, *, actor: str, now: float) -> None:
        """Insert or replace ``device`` (status paired); settle its pending request as approved."""
        ...

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
        """Set a paired device's token hash if it still is ``expected_hash`` (compare-and-set).

        Only the token changes, never the role. None when the device is gone,
        revoked, or its token changed meanwhile.
        """
        ...

    def revoke_device(self, device_id: str, *, actor: str, now: float) -> Device | None:
        """Mark a paired device revoked (its token hash is kept); None if missing or revoked."""
        ...

    def assign_user(
        self, device_id: str, user: str | None, *, actor: str, now: float
    ) -> Device | None:
        """Set (or with None clear) the device's operator-assigned user; ``device.user_assigned``.

        None when there is no such device.
        """
        ...

    def rename_device(self, device_id: str, name: str, *, actor: str, now: float) -> Device | None:
        """None when the device does not exist."""
        ...

    def record_seen(self, seen: Mapping[str, Seen]) -> None:
        """One batched write of last-seen times (never moved backwards) and addresses."""
        ...

    def expire_idle_devices(
        self, idle_before: float, *, now: float, approved_by: str | None = None
    ) -> list[Device]:
        """Delete devices not seen (or created, if never seen) since ``idle_before``.

        ``approved_by`` limits it to the devices that actor approved (``local``:
        those a local client paired).
        """
        ...

    # -- pairing requests -----------------------------------------------------------

    def open_request(
        self,
        candidate: PairingRequest,
        *,
        max_pending: int,
        max_pending_per_client: int,
        renew_expiry: bool = True,
        decline_cooldown: float = 0.0,
    ) -> PairingRequest | PendingCapHit | Declined:
        """Create or refresh THE pending request of ``candidate.device_id``.

        ``candidate.created_at`` is now. An unexpired pending request of the
        device is refreshed (its id and creation time kept; address, agent,
        name, role and reason taken from the candidate, and the expiry too
        when ``renew_expiry``) whatever the caps. Otherwise, if an operator
        said no to what the candidate asks less than ``decline_cooldown``
        seconds ago (rejected the device's last request, or approved its
        request for admin as user and it now asks for admin again), nothing
        is made and ``Declined`` says until when.
        Otherwise a new one is added unless an unexpired-pending cap is
        reached (requests of the same ``client_ip``, None counting as one
        address); an id already in use is replaced by a fresh one.
        """
        ...

    def get_request(self, request_id: str) -> PairingRequest | None:
        """The request with this id if it is still pending (expired or not)."""
        ...

    def list_requests(self, now: float) -> list[PairingRequest]:
        """Unexpired pending requests, oldest first."""
        ...

    def resolve_request(
        self,
        request_id: str,
        *,
        approve: bool,
        role: Role | None,
        actor: str,
        now: float,
        user: str | None = None,
        replaces: str | None = None,
        at_most: Role | None = None,
    ) -> ResolveOutcome:
        """Atomically take a pending request: at most one caller ever gets RESOLVED.

        Approval pairs the device (``models.approved_device`` with
        ``models.approval_role``, ``at_most`` capping the role granted when
        ``role`` is None), assigning ``user`` when given in the same write, and
        revokes the device ``replaces`` names (an older twin of the same
        browser or machine) in that write too, if it is still paired and
        another device. An expired pending request is settled as expired and
        reported EXPIRED.
        """
        ...

    def expire_requests(self, now: float) -> list[PairingRequest]:
        """Settle every pending request past its expiry as expired."""
        ...

    # -- invites ----------------------------------------------------------------------

    def add_invite(self, invite: Invite) -> None: ...

    def list_invites(self) -> list[Invite]:
        """Invites not cancelled (used and expired ones until housekeeping), oldest first."""
        ...

    def cancel_invite(self, invite_id: str, *, actor: str, now: float) -> Invite | None:
        """Delete an unused invite; None when there is no unused invite with this id."""
        ...

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
        """Use an invite once: pair the device with the invite's role and this token.

        None when no usable (unused, unexpired) invite has this code; of two
        racing callers exactly one gets the device. A still-paired device whose
        role covers the invite's keeps its role.
        """
        ...

    # -- failed attempts --------------------------------------------------------------

    def record_failure(
        self, client: str, *, now: float, window: float, threshold: int, lockout: float
    ) -> float | None:
        """Count a failed attempt of ``client`` in a fixed window of ``window`` seconds.

        Reaching ``threshold`` starts a lockout: the counter restarts and the
        lockout end is returned (and an ``auth.lockout`` event written).
        Failures during a lockout are counted but never extend it.
        """
        ...

    def count_failure(
        self, client: str, *, now: float, window: float, threshold: int, lockout: float
    ) -> Counted:
        """``record_failure``, answering the count too (how many tries are left)."""
        ...

    def locked_until(self, client: str) -> float:
        """The end of ``client``'s lockout (0.0 when there never was one)."""
        ...

    def failure_of(self, client: str) -> FailureCount | None:
        """``client``'s failure counter (None when it has none)."""
        ...

    def lockouts(self, now: float) -> list[FailureCount]:
        """Every client locked out at ``now``, the longest-running lockout first."""
        ...

    def unlock(self, client: str, *, actor: str, now: float) -> FailureCount | None:
        """End ``client``'s lockout and clear its count (``auth.unlocked``); None if not locked."""
        ...

    # -- events -------------------------------------------------------------------------

    def latest_seq(self) -> int:
        """The seq of the newest event ever appended (0 for none), trimmed or not."""
        ...

    def events_after(self, seq: int, limit: int = 500) -> list[Event]: ...

    def wait_events(self, after: int, timeout: float) -> list[Event]:
        """``events_after(after)``, waiting up to ``timeout`` seconds for at least one."""
        ...

    # -- upkeep ---------------------------------------------------------------------------

    def counts(self, now: float) -> tuple[int, dict[str, int]]:
        """(unexpired pending requests, paired devices by role value)."""
        ...

    def housekeeping(self, now: float) -> None:
        """Trim the event log and drop stale counters, resolved requests and old invites."""
        ...

    def file_problem(self, *, deep: bool) -> str | None:
        """What happened to the store's file under the running gateway, or None.

        For a store on a local file: it vanished, was replaced, shrank, or (when
        ``deep``) fails an integrity check. Cheap without ``deep`` (one stat).
        A store on a server answers None: its health is whether it answers.
        """
        ...

    def claim(self, purpose: str, seqs: Iterable[int]) -> set[int]:
        """The seqs among ``seqs`` this process handles for ``purpose`` (``CLAIM_*``).

        Each seq goes to exactly one of the processes that share it for that
        purpose; a claim that cannot be made counts as owned (twice beats never).
        """
        ...

    def about(self) -> BackendInfo:
        """The backend's kind, schema version and what it reports about itself."""
        ...

    def close(self) -> None: ...


# -- what a backend provides ----------------------------------------------------------------------


class Reader(Protocol):
    """Plain reads of what a backend holds. Times are the caller's."""

    def device(self, device_id: str) -> Device | None: ...

    def devices(self, device_ids: Collection[str]) -> dict[str, Device]:
        """The devices among ``device_ids`` that exist, by id."""
        ...

    def device_for_token(self, token_hash: str) -> Device | None:
        """The device whose current token has this hash."""
        ...

    def list_devices(self, *, include_revoked: bool) -> list[Device]:
        """Devices (paired only, unless ``include_revoked``), oldest first."""
        ...

    def inactive_devices(self, before: float) -> list[Device]:
        """Devices last seen (or, never seen, created) before ``before``, oldest first."""
        ...

    def request(self, request_id: str) -> StoredRequest | None: ...

    def pending_of(self, device_id: str) -> PairingRequest | None:
        """The device's pending request, expired or not."""
        ...

    def pending_requests(self, now: float) -> list[PairingRequest]:
        """Pending requests expiring after ``now``, oldest first."""
        ...

    def last_settled_of(self, device_id: str) -> StoredRequest | None:
        """The device's most recently settled request while the store keeps it, else None."""
        ...

    def expired_requests(self, now: float) -> list[PairingRequest]:
        """Pending requests expiring at or before ``now``, oldest first."""
        ...

    def pending_below(self, limit: int, now: float) -> bool:
        """Fewer than ``limit`` pending requests expire after ``now``."""
        ...

    def client_pending_below(self, client_key: str | None, limit: int, now: float) -> bool:
        """As ``pending_below``, counting only the requests of ``client_key``."""
        ...

    def invite(self, invite_id: str) -> Invite | None: ...

    def invite_by_code(self, code_hash: str) -> Invite | None: ...

    def list_invites(self) -> list[Invite]:
        """Every invite held, oldest first."""
        ...

    def failure(self, client: str) -> FailureCount | None: ...

    def failures(self) -> list[FailureCount]:
        """Every failure counter held (an operator's listing: it may scan)."""
        ...

    def latest_seq(self) -> int: ...

    def events_after(self, seq: int, limit: int) -> list[Event]: ...

    def counts(self, now: float) -> tuple[int, dict[str, int]]:
        """(pending requests expiring after ``now``, paired devices by role value)."""
        ...


class Tx(Reader, Protocol):
    """One atomic step: its reads, writes and events are applied together or not at all.

    A step may run more than once (an optimistic backend re-runs it when what
    it read changed before it committed), so it must not act outside the Tx.
    ``keep_until`` says when a record may be dropped by the backend's own upkeep.
    """

    def put_device(self, device: Device) -> None: ...

    def delete_device(self, device: Device) -> None: ...

    def put_request(self, stored: StoredRequest, *, keep_until: float) -> None: ...

    def put_invite(self, invite: Invite, *, keep_until: float) -> None: ...

    def delete_invite(self, invite: Invite) -> None: ...

    def put_failure(self, failure: FailureCount, *, keep_until: float) -> None: ...

    def append(self, type_: str, data: Mapping[str, object], at: float) -> None:
        """Add an event to the log, numbered when the step commits."""
        ...


class Backend(Protocol):
    """Storage without decisions: atomic steps, reads, waiting, claiming, upkeep."""

    @property
    def description(self) -> str: ...

    @property
    def name(self) -> str:
        """How messages name the store, e.g. ``SQLite store /var/lib/edge/edge.sqlite3``."""
        ...

    def transact(self, action: str, now: float, step: Callable[[Tx], T]) -> T:
        """Run ``step`` atomically; ``action`` names it in errors ("approve a request")."""
        ...

    def read(self, action: str, step: Callable[[Reader], T]) -> T: ...

    def wait_events(self, after: int, timeout: float) -> list[Event]: ...

    def claim(self, purpose: str, seqs: Iterable[int]) -> set[int]: ...

    def housekeeping(self, now: float) -> None:
        """Trim the event log and drop what ``keep_until`` (or retention) has released."""
        ...

    def file_problem(self, *, deep: bool) -> str | None: ...

    def export_snapshot(self) -> StoreSnapshot: ...

    def import_snapshot(self, snapshot: StoreSnapshot, *, replace: bool) -> None: ...

    def about(self) -> BackendInfo: ...

    def close(self) -> None: ...
