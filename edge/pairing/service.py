"""The pairing decisions: who may connect, and what operators do about devices.

``PairingService.connect`` is the whole ``/ws`` handshake decision after the
frame is parsed, so the order of checks lives in one function: lockout, frame
shape, device signature, then the credential. Every refusal is a ``Denial``;
those that guess at a secret feed the per-address lockout automatically.

The service holds two small in-memory caches, both safe to lose: device by
token hash and lockout state per address (both on the HTTP hot path). Changes made by this process
invalidate them at once; changes made elsewhere (other workers, replicas, the
CLI) arrive as store events through ``apply_events``, and cached devices are
re-read after ``TOKEN_CACHE_TTL`` seconds in any case. While the store is
unreachable (Redis down), a device token verified within the last
``STORE_OUTAGE_GRACE`` seconds keeps working and known lockouts still apply;
anything that needs the store raises ``StoreError``.
"""

from __future__ import annotations

import math
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edge.net.client_key import DEFAULT_IPV6_PREFIX, client_key
from edge.pairing.codes import new_request_id, normalize_request_id
from edge.pairing.identity import VerifiedIdentity, verify_device
from edge.pairing.models import (
    NOT_PAIRED,
    REVOKED,
    ROLE_UPGRADE,
    USER_RULE,
    ConnectAttempt,
    Device,
    Event,
    Invite,
    MalformedConnect,
    PairingRequest,
    Role,
    approved_device,
    valid_user,
)
from edge.pairing.store import (
    PendingCapHit,
    ResolveStatus,
    Seen,
    Store,
    StoreError,
    pending_cap_message,
)
from edge.pairing.tokens import generate_secret, hash_secret, secrets_equal
from edge.refusals import Denial

MAX_NAME_CHARS = 64
MAX_SECRET_CHARS = 512
MAX_USER_AGENT_CHARS = 256
MAX_INVITE_TTL = 30 * 86_400.0
INVITE_CODE_BYTES = 18  # 144 bits: short enough for a QR code or a chat message
TOKEN_CACHE_SIZE = 4096
TOKEN_CACHE_TTL = 30.0
STORE_OUTAGE_GRACE = 120.0  # how long a verified token outlives an unreachable store
LOCKOUT_CACHE_SIZE = 65_536
LOCKOUT_RECHECK = 1.0
TOUCH_RESOLUTION = 1.0  # seconds: last_seen_at is kept to about this precision
TOKEN_SWAP_ATTEMPTS = 8
LOCAL_ACTOR = "local"

_DEVICE_REF = re.compile(r"[0-9a-f]{6,64}")


# -- policy and outcomes ----------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitPolicy:
    """``failures`` failed attempts within ``window`` seconds lock a client for ``lockout``.

    A client is its IPv4 address or its IPv6 ``/ipv6_prefix`` (``client_key``).
    """

    failures: int = 10
    window: float = 60
    lockout: float = 300
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"auth.rate_limit.failures must be at least 1, not {self.failures}")
        if not 32 <= self.ipv6_prefix <= 128:
            raise ValueError(
                f"auth.rate_limit.ipv6_prefix must be from 32 to 128, not {self.ipv6_prefix}"
            )
        _require_positive("auth.rate_limit.window", self.window)
        _require_positive("auth.rate_limit.lockout", self.lockout)


@dataclass(frozen=True)
class PairingPolicy:
    request_ttl: float = 300
    max_pending: int = 256
    max_pending_per_client: int = 8
    device_idle_expiry: float | None = None
    signature_skew: float = 120
    rate_limit: RateLimitPolicy = field(default_factory=RateLimitPolicy)

    def __post_init__(self) -> None:
        _require_positive("pairing.request_ttl", self.request_ttl)
        _require_positive("pairing.signature_skew", self.signature_skew)
        if self.device_idle_expiry is not None:
            _require_positive("pairing.device_idle_expiry", self.device_idle_expiry)
        for name, value in (
            ("pairing.max_pending", self.max_pending),
            ("pairing.max_pending_per_client", self.max_pending_per_client),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")


def _require_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")


@dataclass(frozen=True)
class Admitted:
    device: Device
    device_token: str = field(repr=False)


@dataclass(frozen=True)
class Denied:
    """A refusal; for PAIRING_REQUIRED ``request`` is the pending request (None if capped)."""

    denial: Denial
    request: PairingRequest | None = None
    detail: str = ""


class PairingError(Exception):
    """An operator action cannot be done; the message says why, ready to print."""


class NotFound(PairingError):
    pass


class AlreadyResolved(PairingError):
    pass


class PendingLimitReached(PairingError):
    pass


class InvalidValue(PairingError, ValueError):
    pass


def clean_name(text: str) -> str | None:
    """``text`` stripped, if it is 1-64 characters with no control or format characters."""
    if not isinstance(text, str):
        return None
    name = text.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        return None
    if any(unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn"} for char in name):
        return None
    return name


def device_actor(device: Device) -> str:
    """How a device appears in the audit trail when it acts (from an admin dashboard)."""
    return f"device:{device.id[:12]} ({device.name})"


def default_device_name(device_id: str) -> str:
    return f"device {device_id[:8]}"


# -- the service ------------------------------------------------------------------------------


class PairingService:
    def __init__(
        self,
        store: Store,
        gateway_token: str,
        policy: PairingPolicy = PairingPolicy(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self._clock = clock
        self._gateway_token = ""
        self.set_gateway_token(gateway_token)
        self._lock = threading.Lock()
        self._token_cache: OrderedDict[str, tuple[Device, float]] = OrderedDict()
        # Bumped whenever a device is forgotten: a store read that raced with a revocation
        # must not put the device back into the cache afterwards.
        self._cache_epoch = 0
        self._lockouts: dict[str, tuple[float, float]] = {}  # key -> (until, checked at)
        self._touches: dict[str, Seen] = {}

    # -- gateway token and lockouts ---------------------------------------------------------

    def client_key(self, client_ip: str | None) -> str:
        """The key this client's lockout and caps are counted under (the policy's prefix)."""
        return client_key(client_ip, self.policy.rate_limit.ipv6_prefix)

    def set_gateway_token(self, token: str) -> None:
        if not isinstance(token, str) or not token.strip():
            raise InvalidValue("the gateway token must be a non-empty string")
        self._gateway_token = token

    def check_gateway_token(self, presented: str) -> bool:
        if not isinstance(presented, str) or not presented:
            return False
        return secrets_equal(presented, self._gateway_token)

    def lockout_remaining(self, client_key: str) -> float:
        """Seconds until ``client_key`` may try again; 0.0 when it is not locked out.

        On the hot path of every HTTP request: the store is asked at most once
        per ``LOCKOUT_RECHECK`` seconds per address. Lockouts this process starts
        are known at once, those of other processes through ``apply_events``.
        """
        now = self._clock()
        cached = self._lockouts.get(client_key)  # one dict read is atomic; writers take the lock
        known = self.known_lockout(client_key)
        if known is not None and not known[1]:
            return known[0]
        try:
            until = self.store.locked_until(client_key)
        except StoreError:  # the store is down: what this process last knew still holds
            return max(0.0, cached[0] - now) if cached is not None else 0.0
        self._remember_lockout(client_key, until)
        return max(0.0, until - now)

    def known_lockout(self, client_key: str) -> tuple[float, bool] | None:
        """What this process knows of ``client_key``'s lockout without asking the store.

        ``(remaining, recheck_due)``, or None when it knows nothing. A running
        lockout needs no recheck; an ended one is re-read from the store every
        ``LOCKOUT_RECHECK`` seconds (``lockout_remaining`` does it).
        """
        cached = self._lockouts.get(client_key)  # one dict read is atomic; writers take the lock
        if cached is None:
            return None
        until, checked_at = cached
        remaining = until - self._clock()
        if remaining > 0:
            return remaining, False
        return 0.0, time.monotonic() - checked_at >= LOCKOUT_RECHECK

    def record_failure(self, client_key: str) -> bool:
        """Count a failed attempt; True when it started a lockout (``auth.lockout`` event)."""
        limit = self.policy.rate_limit
        until = self.store.record_failure(
            client_key,
            now=self._clock(),
            window=limit.window,
            threshold=limit.failures,
            lockout=limit.lockout,
        )
        if until is None:
            return False
        self._remember_lockout(client_key, until)
        return True

    def _remember_lockout(self, client_key: str, until: float) -> None:
        checked_at = time.monotonic()
        with self._lock:
            if len(self._lockouts) >= LOCKOUT_CACHE_SIZE:
                self._prune_lockouts()
                if len(self._lockouts) >= LOCKOUT_CACHE_SIZE:
                    self._lockouts.clear()  # only a cache: the store still has them
            previous = self._lockouts.get(client_key, (0.0, 0.0))[0]
            self._lockouts[client_key] = (max(until, previous), checked_at)

    def _prune_lockouts(self) -> None:
        """Drop ended lockouts whose recheck is due (the caller holds the lock)."""
        now, fresh = self._clock(), time.monotonic() - LOCKOUT_RECHECK
        self._lockouts = {
            key: (until, checked_at)
            for key, (until, checked_at) in self._lockouts.items()
            if until > now or checked_at > fresh
        }

    # -- the handshake ----------------------------------------------------------------------

    def connect(
        self,
        *,
        attempt: ConnectAttempt | MalformedConnect,
        nonce: str,
        client_ip: str | None,
        local: bool,
        user_agent: str | None,
    ) -> Admitted | Denied:
        """Decide a ``/ws`` connect attempt (``edge.gateway.protocol`` read it) answering ``nonce``.

        Lockouts never touch a local client: it presents no secret, so it
        guesses at none, and a page that shares its address (a DNS-rebinding
        page in the operator's own browser) must not be able to lock the
        operator's own dashboard out with its bad guesses.
        """
        key = self.client_key(client_ip)
        if not local:
            remaining = self.lockout_remaining(key)
            if remaining > 0:
                detail = f"locked out for {math.ceil(remaining)} s"
                return Denied(Denial.RATE_LIMITED, detail=detail)
        if isinstance(attempt, MalformedConnect):
            return Denied(Denial.INVALID_HANDSHAKE, detail=attempt.detail)
        outcome = self._decide(attempt, attempt.device, nonce, client_ip, local, user_agent)
        if not local and isinstance(outcome, Denied) and outcome.denial.counts_as_failure:
            self.record_failure(key)
        return outcome

    def _decide(
        self,
        frame: ConnectAttempt,
        device_field: object,
        nonce: str,
        client_ip: str | None,
        local: bool,
        user_agent: str | None,
    ) -> Admitted | Denied:
        now = self._clock()
        identity = verify_device(
            device_field,
            nonce,
            frame.role.value,
            now_ms=int(now * 1000),
            max_skew_ms=int(self.policy.signature_skew * 1000),
        )
        if isinstance(identity, Denial):
            return Denied(identity)
        name = frame.name or default_device_name(identity.device_id)
        if local:
            return self._admit_local(identity, name, client_ip)
        if frame.credential == "deviceToken":
            return self._with_device_token(frame, identity, name, client_ip, user_agent)
        if frame.credential == "invite":
            return self._with_invite(frame, identity, name, client_ip)
        if frame.credential is None:
            return Denied(Denial.GATEWAY_TOKEN_MISSING)
        if not self.check_gateway_token(frame.secret):
            return Denied(Denial.GATEWAY_TOKEN_MISMATCH)
        device = self.store.get_device(identity.device_id)
        if device is not None and device.is_paired and device.role.covers(frame.role):
            issued = self._issue_token(device.id, actor=device_actor(device), reason="reconnect")
            if isinstance(issued, Admitted):
                self.touch(device.id, client_ip)
                return issued
            if issued is not None:
                return issued
            device = self.store.get_device(identity.device_id)  # revoked meanwhile
        reason = ROLE_UPGRADE if device is not None and device.is_paired else NOT_PAIRED
        return self._pairing_required(identity, name, frame.role, reason, client_ip, user_agent)

    def _admit_local(
        self, identity: VerifiedIdentity, name: str, client_ip: str | None
    ) -> Admitted | Denied:
        """Local clients are trusted by construction: admin, approved by ``local``."""
        existing = self.store.get_device(identity.device_id)
        if existing is not None and existing.is_paired and existing.role is Role.ADMIN:
            issued = self._issue_token(existing.id, actor=LOCAL_ACTOR, reason="reconnect")
            if isinstance(issued, Admitted):
                self.touch(existing.id, client_ip)
                return issued
            if issued is not None:
                return issued
            existing = self.store.get_device(identity.device_id)
        token = generate_secret()
        now = self._clock()
        device = approved_device(
            existing,
            device_id=identity.device_id,
            public_key=identity.public_key,
            name=name,
            role=Role.ADMIN,
            approved_by=LOCAL_ACTOR,
            now=now,
            token_hash=hash_secret(token),
        )
        self.store.pair_device(device, actor=LOCAL_ACTOR, now=now)
        self._forget_device(device.id)
        self.touch(device.id, client_ip)
        return Admitted(device, token)

    def _with_device_token(
        self,
        frame: ConnectAttempt,
        identity: VerifiedIdentity,
        name: str,
        client_ip: str | None,
        user_agent: str | None,
    ) -> Admitted | Denied:
        device = self._device_for_token_hash(hash_secret(frame.secret))
        if device is None:
            return Denied(Denial.DEVICE_TOKEN_INVALID)
        if device.id != identity.device_id:
            return Denied(Denial.DEVICE_IDENTITY_MISMATCH, detail="device token of another device")
        if device.status == REVOKED:
            return Denied(Denial.DEVICE_REVOKED)
        if not device.role.covers(frame.role):
            return self._pairing_required(
                identity, name, frame.role, ROLE_UPGRADE, client_ip, user_agent
            )
        self.touch(device.id, client_ip)
        return Admitted(device, frame.secret)

    def _with_invite(
        self, frame: ConnectAttempt, identity: VerifiedIdentity, name: str, client_ip: str | None
    ) -> Admitted | Denied:
        """An invite pairs the device with the invite's role (the hello says which)."""
        token = generate_secret()
        device = self.store.redeem_invite(
            hash_secret(frame.secret),
            device_id=identity.device_id,
            public_key=identity.public_key,
            name=name,
            token_hash=hash_secret(token),
            now=self._clock(),
        )
        if device is None:
            return Denied(Denial.INVITE_INVALID)
        self._forget_device(device.id)
        self.touch(device.id, client_ip)
        return Admitted(device, token)

    def _issue_token(self, device_id: str, *, actor: str, reason: str) -> Admitted | Denied | None:
        """A new device token for a paired device; the old one stops working.

        None when the device is no longer paired. Compare-and-set on the token
        hash, retried, so an operator's rotation and a reconnect never both
        believe they hold the current token.
        """
        for _ in range(TOKEN_SWAP_ATTEMPTS):
            device = self.store.get_device(device_id)
            if device is None or not device.is_paired:
                return None
            token = generate_secret()
            updated = self.store.replace_token(
                device_id,
                expected_hash=device.token_hash,
                new_hash=hash_secret(token),
                actor=actor,
                reason="issued" if device.token_hash is None else reason,
                now=self._clock(),
            )
            if updated is not None:
                self._forget_device(device_id)
                return Admitted(updated, token)
        return Denied(Denial.INVALID_HANDSHAKE, detail="the device connected many times at once")

    def _pairing_required(
        self,
        identity: VerifiedIdentity,
        name: str,
        role: Role,
        reason: str,
        client_ip: str | None,
        user_agent: str | None,
    ) -> Denied:
        try:
            request = self.request_pairing(
                identity,
                name=name,
                role=role,
                reason=reason,
                client_ip=client_ip,
                user_agent=user_agent,
            )
        except PendingLimitReached as exc:
            return Denied(Denial.PAIRING_REQUIRED, None, detail=str(exc))
        return Denied(Denial.PAIRING_REQUIRED, request, detail=request.reason)

    def request_pairing(
        self,
        identity: VerifiedIdentity,
        *,
        name: str,
        role: Role,
        reason: str,
        client_ip: str | None,
        user_agent: str | None,
    ) -> PairingRequest:
        """Create or refresh the device's pending request; PendingLimitReached at a cap."""
        now = self._clock()
        agent = None if user_agent is None else user_agent[:MAX_USER_AGENT_CHARS]
        candidate = PairingRequest(
            id=new_request_id(),
            device_id=identity.device_id,
            public_key=identity.public_key,
            name=name,
            client_ip=client_ip,
            user_agent=agent,
            role=role,
            reason=reason,
            created_at=now,
            expires_at=now + self.policy.request_ttl,
            client_key=self.client_key(client_ip),
        )
        outcome = self.store.open_request(
            candidate,
            max_pending=self.policy.max_pending,
            max_pending_per_client=self.policy.max_pending_per_client,
        )
        if isinstance(outcome, PendingCapHit):
            raise PendingLimitReached(pending_cap_message(outcome))
        return outcome

    # -- HTTP credentials ---------------------------------------------------------------------

    def authenticate_token(
        self, device_token: str, *, client_ip: str | None = None
    ) -> Device | Denial:
        """The paired device holding ``device_token`` (bearer or cookie), or why not."""
        if not isinstance(device_token, str) or not 0 < len(device_token) <= MAX_SECRET_CHARS:
            return Denial.DEVICE_TOKEN_INVALID
        return self._holder_or_denial(
            self._device_for_token_hash(hash_secret(device_token)), client_ip
        )

    def known_authentication(
        self, device_token: str, *, client_ip: str | None = None
    ) -> Device | Denial | None:
        """``authenticate_token`` from this process's cache alone; None when the store must answer.

        The event loop calls it directly (no I/O), so a recently seen token
        costs no thread hop; on None the caller asks ``authenticate_token`` off
        the loop.
        """
        if not isinstance(device_token, str) or not 0 < len(device_token) <= MAX_SECRET_CHARS:
            return Denial.DEVICE_TOKEN_INVALID
        cached = self._token_cache.get(hash_secret(device_token))
        if cached is None or time.monotonic() - cached[1] >= TOKEN_CACHE_TTL:
            return None
        return self._holder_or_denial(cached[0], client_ip)

    def _holder_or_denial(self, device: Device | None, client_ip: str | None) -> Device | Denial:
        if device is None:
            return Denial.DEVICE_TOKEN_INVALID
        if device.status == REVOKED:
            return Denial.DEVICE_REVOKED
        self.touch(device.id, client_ip)
        return device

    def token_holder(self, device_token: str) -> str | None:
        """The id of the device ``device_token`` belongs to (paired or revoked), or None.

        Lets the control socket tell a browser's own session cookie from one a
        previous device of that browser left behind.
        """
        if not isinstance(device_token, str) or not 0 < len(device_token) <= MAX_SECRET_CHARS:
            return None
        device = self._device_for_token_hash(hash_secret(device_token))
        return device.id if device is not None else None

    def _device_for_token_hash(self, token_hash: str) -> Device | None:
        now = time.monotonic()
        # Read without the lock (one dict read is atomic; writers take it). Hits do not
        # reorder the cache: an entry is re-inserted at the end whenever it is re-read
        # (at least every TOKEN_CACHE_TTL), so evicting the oldest insertion costs at most
        # one early store read.
        cached = self._token_cache.get(token_hash)
        if cached is not None and now - cached[1] < TOKEN_CACHE_TTL:
            return cached[0]
        epoch = self._cache_epoch
        try:
            device = self.store.device_for_token(token_hash)
        except StoreError:
            if cached is not None and now - cached[1] < STORE_OUTAGE_GRACE:
                return cached[0]  # verified shortly before the store went away
            raise
        if device is None:
            return None
        with self._lock:
            if epoch != self._cache_epoch:
                return device  # a device changed meanwhile: answer, but cache nothing stale
            self._token_cache[token_hash] = (device, now)
            self._token_cache.move_to_end(token_hash)
            while len(self._token_cache) > TOKEN_CACHE_SIZE:
                self._token_cache.popitem(last=False)
        return device

    def _forget_device(self, device_id: str) -> None:
        with self._lock:
            self._cache_epoch += 1
            stale = [h for h, (d, _) in self._token_cache.items() if d.id == device_id]
            for token_hash in stale:
                del self._token_cache[token_hash]

    def apply_events(self, events: Sequence[Event]) -> None:
        """Bring the caches up to date with changes made by other processes."""
        for event in events:
            device_id = event.data.get("device_id")
            if isinstance(device_id, str):
                self._forget_device(device_id)
            if event.type == "auth.lockout":
                client, until = event.data.get("client"), event.data.get("until")
                if isinstance(client, str) and isinstance(until, int | float):
                    self._remember_lockout(client, float(until))

    # -- operator actions ---------------------------------------------------------------------

    def approve(
        self,
        request_id: str,
        *,
        role: Role | None = None,
        actor: str,
        user: str | None = None,
    ) -> Device:
        """Pair the requesting device (role: the requested one unless given).

        ``user`` assigns the login upstream apps will know the device by, in
        the same write as the approval, so the device is never admitted under
        a provisional identity.
        """
        if role is not None and not isinstance(role, Role):
            raise InvalidValue(f'role must be "admin" or "user", not {role!r}')
        if user is not None and valid_user(user) is None:
            raise InvalidValue(f"{user!r} is not a user name: {USER_RULE}")
        resolution = self._resolve(request_id, approve=True, role=role, actor=actor, user=user)
        assert resolution.device is not None  # an approval always pairs a device
        return resolution.device

    def approve_latest(
        self, *, role: Role | None = None, actor: str, user: str | None = None
    ) -> Device:
        requests = self.list_requests()
        if not requests:
            raise NotFound("there are no pending pairing requests")
        newest = max(requests, key=lambda request: (request.created_at, request.id))
        return self.approve(newest.id, role=role, actor=actor, user=user)

    def reject(self, request_id: str, *, actor: str) -> PairingRequest:
        resolution = self._resolve(request_id, approve=False, role=None, actor=actor)
        assert resolution.request is not None
        return resolution.request

    def assign_user(self, device_id: str, user: str | None, *, actor: str) -> Device:
        """Give a device the login upstream apps know it by (None: back to its device id).

        Several devices of one person share a user; the name a device chose for
        itself never becomes one.
        """
        if user is not None and valid_user(user) is None:
            raise InvalidValue(f"{user!r} is not a user name: {USER_RULE}")
        device = self.find_device(device_id)
        assigned = self.store.assign_user(device.id, user, actor=actor, now=self._clock())
        self._forget_device(device.id)
        if assigned is None:
            raise NotFound(f"device {_describe(device)} was removed meanwhile")
        return assigned

    def _resolve(
        self,
        request_id: str,
        *,
        approve: bool,
        role: Role | None,
        actor: str,
        user: str | None = None,
    ) -> _Done:
        normalized = normalize_request_id(request_id)
        if normalized is None:
            raise InvalidValue(
                f"{request_id!r} is not a pairing request id (they look like K7QF-2M9D; "
                "`edge devices list` shows them)"
            )
        result = self.store.resolve_request(
            normalized, approve=approve, role=role, actor=actor, now=self._clock(), user=user
        )
        if result.status is ResolveStatus.NOT_FOUND:
            raise NotFound(
                f"there is no pairing request {normalized}; `edge devices list` shows the "
                "pending ones"
            )
        if result.status is ResolveStatus.EXPIRED:
            raise NotFound(
                f"pairing request {normalized} expired; the device must connect again to make "
                "a new one"
            )
        if result.status is ResolveStatus.ALREADY_RESOLVED:
            raise AlreadyResolved(
                f"pairing request {normalized} was already {result.decision}"
                + (f" by {result.resolved_by}" if result.resolved_by else "")
            )
        if result.request is not None:
            self._forget_device(result.request.device_id)
        return _Done(result.request, result.device)

    def revoke(self, device_id: str, *, actor: str) -> Device:
        """Revoke a device by id or unique prefix; its sockets close, its token is dead."""
        device = self.find_device(device_id)
        revoked = self.store.revoke_device(device.id, actor=actor, now=self._clock())
        self._forget_device(device.id)
        if revoked is None:
            raise AlreadyResolved(f"device {_describe(device)} is already revoked")
        return revoked

    def rename(self, device_id: str, name: str, *, actor: str) -> Device:
        cleaned = clean_name(name) if isinstance(name, str) else None
        if cleaned is None:
            raise InvalidValue(f"a device name must be 1-{MAX_NAME_CHARS} printable characters")
        device = self.find_device(device_id)
        renamed = self.store.rename_device(device.id, cleaned, actor=actor, now=self._clock())
        self._forget_device(device.id)
        if renamed is None:
            raise NotFound(f"device {_describe(device)} was removed meanwhile")
        return renamed

    def rotate_token(self, device_id: str, *, actor: str) -> str:
        """A new device token; the old one stops working. The role never changes here."""
        device = self.find_device(device_id)
        if not device.is_paired:
            raise InvalidValue(f"device {_describe(device)} is revoked; it must pair again instead")
        issued = self._issue_token(device.id, actor=actor, reason="rotate")
        if not isinstance(issued, Admitted):
            raise AlreadyResolved(f"device {_describe(device)} was revoked or changed meanwhile")
        return issued.device_token

    def find_device(self, device_ref: str) -> Device:
        """The device whose id is ``device_ref`` or starts with it (6+ hex characters)."""
        text = device_ref.strip().lower() if isinstance(device_ref, str) else ""
        if not _DEVICE_REF.fullmatch(text):
            raise InvalidValue(
                f"{device_ref!r} is not a device id: give the id or its first 6+ hex characters "
                "as `edge devices list` shows them"
            )
        if len(text) == 64:
            device = self.store.get_device(text)
            if device is None:
                raise NotFound(f"there is no device {text[:12]}")
            return device
        matches = [
            d for d in self.store.list_devices(include_revoked=True) if d.id.startswith(text)
        ]
        if not matches:
            raise NotFound(f"no device id starts with {text}")
        if len(matches) > 1:
            listed = ", ".join(_describe(d) for d in matches[:10])
            raise InvalidValue(f"{text} matches several devices ({listed}); give more characters")
        return matches[0]

    # -- invites ------------------------------------------------------------------------------

    def create_invite(
        self, *, role: Role, name: str | None, ttl: float, actor: str
    ) -> tuple[Invite, str]:
        """A single-use invite and its code (shown once; only its hash is stored)."""
        if not isinstance(role, Role):
            raise InvalidValue(f'role must be "admin" or "user", not {role!r}')
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and 0 < ttl <= MAX_INVITE_TTL):
            raise InvalidValue(
                f"an invite must live between 1 second and {int(MAX_INVITE_TTL // 86_400)} days"
            )
        cleaned = None
        if name is not None:
            cleaned = clean_name(name)
            if cleaned is None:
                raise InvalidValue(f"a device name must be 1-{MAX_NAME_CHARS} printable characters")
        code = generate_secret(INVITE_CODE_BYTES)
        now = self._clock()
        invite = Invite(
            id=new_request_id(),
            code_hash=hash_secret(code),
            role=role,
            name=cleaned,
            created_at=now,
            expires_at=now + ttl,
            created_by=actor,
        )
        self.store.add_invite(invite)
        return invite, code

    def list_invites(self) -> list[Invite]:
        return self.store.list_invites()

    def cancel_invite(self, invite_id: str, *, actor: str) -> Invite:
        normalized = normalize_request_id(invite_id)
        if normalized is None:
            raise InvalidValue(f"{invite_id!r} is not an invite id (they look like K7QF-2M9D)")
        invite = self.store.cancel_invite(normalized, actor=actor, now=self._clock())
        if invite is None:
            raise NotFound(f"there is no unused invite {normalized}")
        return invite

    # -- listings, upkeep, events ---------------------------------------------------------------

    def list_devices(self, include_revoked: bool = False) -> list[Device]:
        return self.store.list_devices(include_revoked=include_revoked)

    def list_requests(self) -> list[PairingRequest]:
        """Pending requests, oldest first (expired ones are settled first)."""
        now = self._clock()
        self.store.expire_requests(now)
        return self.store.list_requests(now)

    def sweep(self) -> None:
        """Expire stale requests and idle devices, trim the log; cheap when nothing is due."""
        self.flush_touches()
        now = self._clock()
        self.store.expire_requests(now)
        idle = self.policy.device_idle_expiry
        if idle is not None:
            for device in self.store.expire_idle_devices(now - idle, now=now):
                self._forget_device(device.id)
        self.store.housekeeping(now)
        with self._lock:
            self._prune_lockouts()

    def touch(self, device_id: str, client_ip: str | None) -> None:
        """Note that a device was seen (written later by ``flush_touches``)."""
        now = self._clock()
        previous = self._touches.get(device_id)  # one dict read is atomic; writers take the lock
        if (
            previous is not None
            and (client_ip is None or client_ip == previous.ip)
            and 0 <= now - previous.at < TOUCH_RESOLUTION
        ):
            return  # noted within the last second from the same address: nothing new
        with self._lock:
            previous = self._touches.get(device_id)
            ip = client_ip if client_ip is not None else (previous.ip if previous else None)
            self._touches[device_id] = Seen(now, ip)

    def flush_touches(self) -> None:
        """One batched write of last-seen times; kept for the next try if the store fails."""
        with self._lock:
            batch, self._touches = self._touches, {}
        if not batch:
            return
        try:
            self.store.record_seen(batch)
        except Exception:
            with self._lock:
                for device_id, seen in batch.items():
                    self._touches.setdefault(device_id, seen)
            raise

    def events_after(self, seq: int, limit: int = 500) -> list[Event]:
        return self.store.events_after(seq, limit)

    def latest_seq(self) -> int:
        return self.store.latest_seq()

    def wait_events(self, after: int, timeout: float) -> list[Event]:
        return self.store.wait_events(after, timeout)

    def counts(self) -> tuple[int, dict[str, int]]:
        """(pending requests, paired devices by role) for the metrics gauges."""
        return self.store.counts(self._clock())


@dataclass(frozen=True)
class _Done:
    request: PairingRequest | None
    device: Device | None


def _describe(device: Device) -> str:
    return f"{device.id[:12]} ({device.name})"
