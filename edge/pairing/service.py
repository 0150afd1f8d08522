"""The pairing decisions: who may connect, and what operators do about devices.

``PairingService.connect`` is the whole ``/ws`` handshake decision after the
frame is parsed, so the order of checks lives in one function: lockout, frame
shape, device signature, then the credential. Every refusal is a ``Denial``;
those that guess at a secret feed the per-address lockout automatically.

The service's other jobs live beside it: operator actions and upkeep in
``operations``, the in-memory caches (device by token hash, lockouts,
last-seen batching) in ``caches``, and the policies, outcomes and errors in
``policy`` (re-exported here). Anything that needs the store raises
``StoreError`` while it is unreachable.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from edge.net.client_key import UNKNOWN_CLIENT, client_key
from edge.pairing.caches import Epoch, LockoutCache, TokenCache, Touches
from edge.pairing.codes import new_request_id
from edge.pairing.identity import VerifiedIdentity, verify_device
from edge.pairing.models import (
    NOT_PAIRED,
    REVOKED,
    ROLE_UPGRADE,
    ConnectAttempt,
    Device,
    Event,
    MalformedConnect,
    PairingRequest,
    Role,
    approved_device,
)
from edge.pairing.operations import OperatorActions
from edge.pairing.policy import (
    LOCAL_ACTOR,
    MAX_INVITE_TTL,
    MAX_NAME_CHARS,
    MAX_SECRET_CHARS,
    MAX_USER_AGENT_CHARS,
    Admitted,
    AlreadyResolved,
    Denied,
    FailureCounted,
    InvalidValue,
    NotFound,
    PairingDeclined,
    PairingError,
    PairingPolicy,
    PendingLimitReached,
    RateLimitPolicy,
    clean_name,
    default_device_name,
    device_actor,
)
from edge.pairing.store import Declined, PendingCapHit, Store, pending_cap_message
from edge.pairing.tokens import generate_secret, hash_secret, secrets_equal
from edge.refusals import Denial

__all__ = [
    "MAX_INVITE_TTL",
    "MAX_NAME_CHARS",
    "MAX_SECRET_CHARS",
    "Admitted",
    "AlreadyResolved",
    "Denied",
    "FailureCounted",
    "InvalidValue",
    "NotFound",
    "PairingDeclined",
    "PairingError",
    "PairingPolicy",
    "PairingService",
    "PendingLimitReached",
    "RateLimitPolicy",
    "clean_name",
    "default_device_name",
    "device_actor",
]

DEFAULT_POLICY = PairingPolicy()
CLIENT_KEY_MEMO = 4096  # remembered client keys per service


# -- the service ------------------------------------------------------------------------------


class PairingService(OperatorActions):
    """The pairing decisions: the ``/ws`` handshake here, operator actions in ``operations``."""

    def __init__(
        self,
        store: Store,
        gateway_token: str,
        policy: PairingPolicy = DEFAULT_POLICY,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self._clock = clock
        self.clock = clock  # the wall clock of its decisions (tests move it)
        self._gateway_token = ""
        self.set_gateway_token(gateway_token)
        # Moves when a cached credential or lockout answer may have changed (``Epoch``).
        self.epoch = Epoch()
        self._tokens = TokenCache(self.epoch)
        self._lockouts = LockoutCache(clock, self.epoch)
        self._touches = Touches(clock)
        self._client_keys: dict[str | None, str] = {}

    # -- gateway token and lockouts ---------------------------------------------------------

    def client_key(self, client_ip: str | None) -> str:
        """The key this client's lockout and caps are counted under (the policy's prefix).

        Asked on every request with a credential, so recent answers are kept
        (a pure function of the address; bounded, emptied when full).
        """
        key = self._client_keys.get(client_ip)
        if key is None:
            key = client_key(client_ip, self.policy.rate_limit.ipv6_prefix)
            if len(self._client_keys) >= CLIENT_KEY_MEMO:
                self._client_keys.clear()
            self._client_keys[client_ip] = key
        return key

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
        return self._lockouts.remaining(client_key, self.store.locked_until)

    def known_lockout(self, client_key: str) -> tuple[float, bool] | None:
        """What this process knows of ``client_key``'s lockout without asking the store.

        ``(remaining, recheck_due)``, or None when it knows nothing. A running
        lockout needs no recheck; an ended one is re-read from the store every
        ``LOCKOUT_RECHECK`` seconds (``lockout_remaining`` does it).
        """
        return self._lockouts.known(client_key)

    def record_failure(self, client_key: str) -> bool:
        """Count a failed attempt; True when it started a lockout (``auth.lockout`` event)."""
        return self.count_failure(client_key).locked_for > 0

    def count_failure(self, client_key: str) -> FailureCounted:
        """Count a failed attempt and say how many are left before the lockout (or its length).

        The number is told to the client: it is no secret that guessing is
        limited, and a person who mistyped the gateway token twice should
        know before the third try that an address-wide lockout is near.
        """
        limit = self.policy.rate_limit
        now = self._clock()
        counted = self.store.count_failure(
            client_key,
            now=now,
            window=limit.window,
            threshold=limit.failures,
            lockout=limit.lockout,
        )
        if counted.started is not None:
            self._lockouts.remember(client_key, counted.started)
            return FailureCounted(0, counted.started - now)
        if counted.locked_until > now:
            return FailureCounted(0, counted.locked_until - now)
        return FailureCounted(max(0, limit.failures - counted.count))

    def attempts(self, client_ip: str | None) -> FailureCounted:
        """How many failures ``client_ip``'s address has left, or how long it is locked out.

        What ``/api/whoami`` tells a page that was just refused, so it can say
        "2 tries left" or count down a lockout; one store read.
        """
        limit = self.policy.rate_limit
        now = self._clock()
        row = self.store.failure_of(self.client_key(client_ip))
        if row is None:
            return FailureCounted(limit.failures)
        if row.locked_until > now:
            return FailureCounted(0, row.locked_until - now)
        if now - row.window_start >= limit.window:
            return FailureCounted(limit.failures)
        return FailureCounted(max(0, limit.failures - row.count))

    def unlock(self, address: str, *, actor: str) -> tuple[str, float]:
        """Lift the lockout of ``address`` (an IP address, or a key as ``lockouts`` lists it).

        Returns the key lifted and when its lockout would have ended. Every
        process of the gateway drops it from its cache on the ``auth.unlocked``
        event; this one at once.
        """
        key = self._lockout_key(address)
        lifted = self.store.unlock(key, actor=actor, now=self._clock())
        if lifted is None:
            raise NotFound(f"{key} is not locked out; `edge auth lockouts` lists those that are")
        self._lockouts.lift(key)
        return key, lifted.locked_until

    def lockouts(self) -> list[tuple[str, float, int]]:
        """``(client key, locked until, failures since)`` of every running lockout."""
        return [(r.client, r.locked_until, r.count) for r in self.store.lockouts(self._clock())]

    def _lockout_key(self, address: str) -> str:
        text = address.strip() if isinstance(address, str) else ""
        if text == UNKNOWN_CLIENT:
            return text
        if "/" in text:
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                network = None
            if network is not None and network.version == 6:
                return f"{network.network_address}/{network.prefixlen}"
        key = self.client_key(text)
        if key == UNKNOWN_CLIENT:
            raise InvalidValue(
                f"{address!r} is not an address: give an IPv4 or IPv6 address, or a key as "
                "`edge auth lockouts` lists it (2001:db8:1:2::/64)"
            )
        return key

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

        Nor do they refuse a valid device token. A lockout exists to stop the
        guessing of the short-lived secrets a person types (the gateway token,
        an invite); a 256-bit device token cannot be guessed, and refusing it
        would let anyone who shares an address with paired devices (a NAT, a
        proxy, a VPN exit) lock them all out with ten bad tries. So an attempt
        with a device token is decided as usual during a lockout; only when it
        fails is the answer "too many failed attempts".
        """
        key = self.client_key(client_ip)
        locked = 0.0 if local else self.lockout_remaining(key)
        if locked > 0 and not _presents_device_token(attempt):
            return _locked_out(locked)
        if isinstance(attempt, MalformedConnect):
            return Denied(Denial.INVALID_HANDSHAKE, detail=attempt.detail)
        outcome = self._decide(attempt, attempt.device, nonce, client_ip, local, user_agent)
        if not isinstance(outcome, Denied) or local or not outcome.denial.counts_as_failure:
            return outcome
        if locked > 0:
            return _locked_out(locked)  # a guess while locked out: nothing more to learn or count
        counted = self.count_failure(key)
        if counted.locked_for > 0:
            return replace(outcome, tries_left=0, retry_after=counted.locked_for)
        return replace(outcome, tries_left=counted.tries_left)

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
        self._tokens.forget(device.id)
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
        self._tokens.forget(device.id)
        self.touch(device.id, client_ip)
        return Admitted(device, token)

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
        except PairingDeclined as exc:
            left = max(0.0, exc.until - self._clock())
            # The declined request, with the reason of this attempt: a device that was
            # approved as user and asks for admin again is told its upgrade was declined.
            declined = replace(exc.request, reason=reason)
            return Denied(
                Denial.PAIRING_REQUIRED, declined, str(exc), retry_after=left, declined=True
            )
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
        """Create or refresh the device's pending request.

        PendingLimitReached at a cap; PairingDeclined while an operator's
        decline of this device cools down. A refresh keeps the request's
        expiry: a waiting page re-checks every few seconds, and a request
        that lived as long as its page was open would never time out.
        """
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
            renew_expiry=False,
            decline_cooldown=self.policy.decline_cooldown,
        )
        if isinstance(outcome, PendingCapHit):
            raise PendingLimitReached(pending_cap_message(outcome))
        if isinstance(outcome, Declined):
            by = f" ({outcome.declined_by})" if outcome.declined_by else ""
            raise PairingDeclined(
                f"an operator{by} said no to request {outcome.request.id} of this device; it "
                f"may ask again in {math.ceil(max(0.0, outcome.until - now))} s "
                "(pairing.decline_cooldown)",
                outcome.request,
                outcome.until,
            )
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
        cached = self._tokens.fresh_presented(device_token)  # seen lately: no hashing
        if cached is None:
            cached = self._tokens.fresh(hash_secret(device_token), presented=device_token)
            if cached is None:
                return None
        return self._holder_or_denial(cached, client_ip)

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
        return self._tokens.lookup(token_hash, self.store.device_for_token)

    def apply_events(self, events: Sequence[Event]) -> None:
        """Bring the caches up to date with changes made by other processes."""
        for event in events:
            device_id = event.data.get("device_id")
            if isinstance(device_id, str):
                self._tokens.forget(device_id)
            if event.type == "auth.lockout":
                client, until = event.data.get("client"), event.data.get("until")
                if isinstance(client, str) and isinstance(until, int | float):
                    self._lockouts.remember(client, float(until))
            elif event.type == "auth.unlocked":
                client = event.data.get("client")
                if isinstance(client, str):
                    self._lockouts.lift(client)


def _presents_device_token(attempt: ConnectAttempt | MalformedConnect) -> bool:
    """Whether the attempt offers a device token, which a lockout does not refuse unheard."""
    return isinstance(attempt, ConnectAttempt) and attempt.credential == "deviceToken"


def _locked_out(remaining: float) -> Denied:
    detail = f"locked out for {math.ceil(remaining)} s"
    return Denied(Denial.RATE_LIMITED, detail=detail, retry_after=remaining)
