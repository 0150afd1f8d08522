"""What operators do about devices, requests and invites, and the service's upkeep.

``OperatorActions`` is the half of ``PairingService`` that the CLI and the
admin API call: each action checks its arguments, asks the store for one
atomic decision, keeps the caches right and turns the store's answer into a
device or a ``PairingError`` whose message is ready to print.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from edge.pairing.caches import LockoutCache, TokenCache, Touches
from edge.pairing.codes import new_request_id, normalize_request_id
from edge.pairing.models import USER_RULE, Device, Event, Invite, PairingRequest, Role, valid_user
from edge.pairing.policy import (
    INVITE_CODE_BYTES,
    LOCAL_ACTOR,
    MAX_INVITE_TTL,
    MAX_NAME_CHARS,
    TOKEN_SWAP_ATTEMPTS,
    Admitted,
    AlreadyResolved,
    Denied,
    InvalidValue,
    NotFound,
    PairingPolicy,
    clean_name,
    describe,
)
from edge.pairing.store import ResolveStatus, Seen, Store
from edge.pairing.tokens import generate_secret, hash_secret
from edge.refusals import Denial

_DEVICE_REF = re.compile(r"[0-9a-f]{6,64}")


class OperatorActions:
    """Operator actions over ``store``; ``PairingService`` provides the state below."""

    store: Store
    policy: PairingPolicy
    _clock: Callable[[], float]
    _tokens: TokenCache
    _lockouts: LockoutCache
    _touches: Touches

    def approve(
        self,
        request_id: str,
        *,
        role: Role | None = None,
        actor: str,
        user: str | None = None,
        at_most: Role | None = None,
    ) -> Device:
        """Pair the requesting device (role: the requested one unless given).

        ``user`` assigns the login upstream apps will know the device by, in
        the same write as the approval, so the device is never admitted under
        a provisional identity. ``at_most`` caps the role granted when
        ``role`` is not given: operators' commands pass ``Role.USER``, so that
        admin is only ever granted by name (``models.approval_role``).
        """
        _check_choice(role, user)
        resolution = self._resolve(
            request_id, approve=True, role=role, actor=actor, user=user, at_most=at_most
        )
        assert resolution.device is not None  # an approval always pairs a device
        return resolution.device

    def approve_replacing(
        self,
        request_id: str,
        replaces: str,
        *,
        role: Role | None = None,
        actor: str,
        user: str | None = None,
        at_most: Role | None = None,
    ) -> tuple[Device, Device | None]:
        """Approve, and revoke ``replaces`` (an older twin) in the same write.

        The twin is the device this one takes over from: the same browser
        profile or machine paired again under a new key. Unless ``user`` is
        given, the new device keeps the twin's user, so upstream apps go on
        knowing it as the same person. The second value is the revoked twin,
        None when it was already gone.
        """
        _check_choice(role, user)
        twin = self.find_device(replaces)
        done = self._resolve(
            request_id,
            approve=True,
            role=role,
            actor=actor,
            user=user,
            replaces=twin.id,
            at_most=at_most,
        )
        assert done.device is not None
        self._tokens.forget(twin.id)
        return done.device, done.replaced

    def approve_latest(
        self, *, role: Role | None = None, actor: str, user: str | None = None
    ) -> Device:
        return self.approve(self.latest_request().id, role=role, actor=actor, user=user)

    def latest_request(self) -> PairingRequest:
        """The newest pending request; NotFound when none is pending."""
        requests = self.list_requests()
        if not requests:
            raise NotFound("there are no pending pairing requests")
        return max(requests, key=lambda request: (request.created_at, request.id))

    def pending_request(self, request_id: str) -> PairingRequest:
        """The pending request ``request_id`` as an operator is about to decide it."""
        normalized = self._request_id(request_id)
        for request in self.list_requests():
            if request.id == normalized:
                return request
        raise NotFound(
            f"there is no pending pairing request {normalized}; `edge devices list` shows them"
        )

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
        self._tokens.forget(device.id)
        if assigned is None:
            raise NotFound(f"device {describe(device)} was removed meanwhile")
        return assigned

    def _resolve(
        self,
        request_id: str,
        *,
        approve: bool,
        role: Role | None,
        actor: str,
        user: str | None = None,
        replaces: str | None = None,
        at_most: Role | None = None,
    ) -> _Done:
        normalized = self._request_id(request_id)
        result = self.store.resolve_request(
            normalized,
            approve=approve,
            role=role,
            actor=actor,
            now=self._clock(),
            user=user,
            replaces=replaces,
            at_most=at_most,
        )
        if result.status is ResolveStatus.NOT_FOUND:
            raise NotFound(
                f"there is no pairing request {normalized}; `edge devices list` shows the "
                "pending ones"
            )
        assert result.request is not None  # set unless NOT_FOUND
        newer = self._newer_note(result.request)
        if result.status is ResolveStatus.EXPIRED:
            raise NotFound(
                f"pairing request {normalized} expired; "
                + (newer or "the device must ask again to make a new one")
            )
        if result.status is ResolveStatus.ALREADY_RESOLVED:
            raise AlreadyResolved(
                f"pairing request {normalized} was already {result.decision}"
                + (f" by {result.resolved_by}" if result.resolved_by else "")
                + (f"; {newer}" if newer else "")
            )
        if result.request is not None:
            self._tokens.forget(result.request.device_id)
        return _Done(result.request, result.device, result.replaced)

    def _request_id(self, request_id: str) -> str:
        normalized = normalize_request_id(request_id)
        if normalized is None:
            raise InvalidValue(
                f"{request_id!r} is not a pairing request id (they look like K7QF-2M9D; "
                "`edge devices list` shows them)"
            )
        return normalized

    def _newer_note(self, old: PairingRequest) -> str | None:
        """Where the device of a settled request now waits, if it asked again since."""
        for request in self.list_requests():
            if request.device_id == old.device_id and request.id != old.id:
                return (
                    f"the device ({old.name!r}) has a newer request {request.id}: "
                    f"`edge devices approve {request.id}` decides that one"
                )
        return None

    def revoke(self, device_id: str, *, actor: str) -> Device:
        """Revoke a device by id or unique prefix; its sockets close, its token is dead."""
        device = self.find_device(device_id)
        revoked = self.store.revoke_device(device.id, actor=actor, now=self._clock())
        self._tokens.forget(device.id)
        if revoked is None:
            raise AlreadyResolved(f"device {describe(device)} is already revoked")
        return revoked

    def rename(self, device_id: str, name: str, *, actor: str) -> Device:
        cleaned = clean_name(name) if isinstance(name, str) else None
        if cleaned is None:
            raise InvalidValue(f"a device name must be 1-{MAX_NAME_CHARS} printable characters")
        device = self.find_device(device_id)
        renamed = self.store.rename_device(device.id, cleaned, actor=actor, now=self._clock())
        self._tokens.forget(device.id)
        if renamed is None:
            raise NotFound(f"device {describe(device)} was removed meanwhile")
        return renamed

    def rotate_token(self, device_id: str, *, actor: str) -> str:
        """A new device token; the old one stops working. The role never changes here."""
        device = self.find_device(device_id)
        if not device.is_paired:
            raise InvalidValue(f"device {describe(device)} is revoked; it must pair again instead")
        issued = self._issue_token(device.id, actor=actor, reason="rotate")
        if not isinstance(issued, Admitted):
            raise AlreadyResolved(f"device {describe(device)} was revoked or changed meanwhile")
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
            listed = ", ".join(describe(d) for d in matches[:10])
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

    def now(self) -> float:
        """The service's clock (epoch seconds), which every stored time is written in."""
        return self._clock()

    def list_devices(self, include_revoked: bool = False) -> list[Device]:
        """The store's devices, with what this process saw of them since its last write.

        Last-seen writes are throttled (``caches.TOUCH_WRITE_INTERVAL``), so the
        store alone would show the device in use as seen a minute ago, or, just
        after it paired, never.
        """
        devices = self.store.list_devices(include_revoked=include_revoked)
        latest = self._touches.latest()
        if not latest:
            return devices
        return [_with_seen(device, latest.get(device.id)) for device in devices]

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
                self._tokens.forget(device.id)
        local_idle = self.policy.local_device_idle_expiry
        if local_idle is not None and (idle is None or local_idle < idle):
            # A local client is approved again at its next connect: expiring costs it nothing.
            expired = self.store.expire_idle_devices(
                now - local_idle, now=now, approved_by=LOCAL_ACTOR
            )
            for device in expired:
                self._tokens.forget(device.id)
        self.store.housekeeping(now)
        self._lockouts.prune()

    def touch(self, device_id: str, client_ip: str | None) -> None:
        """Note that a device was seen (written later by ``flush_touches``)."""
        self._touches.touch(device_id, client_ip)

    def noted_at(self, device_id: str) -> float | None:
        """When the device was last noted as seen and not yet written (``Touches.noted_at``)."""
        return self._touches.noted_at(device_id)

    def flush_touches(self) -> None:
        """One batched write of last-seen times; kept for the next try if the store fails."""
        self._touches.flush(self.store.record_seen)

    def events_after(self, seq: int, limit: int = 500) -> list[Event]:
        return self.store.events_after(seq, limit)

    def latest_seq(self) -> int:
        return self.store.latest_seq()

    def wait_events(self, after: int, timeout: float) -> list[Event]:
        return self.store.wait_events(after, timeout)

    def counts(self) -> tuple[int, dict[str, int]]:
        """(pending requests, paired devices by role) for the metrics gauges."""
        return self.store.counts(self._clock())

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
                self._tokens.forget(device_id)
                return Admitted(updated, token)
        return Denied(Denial.INVALID_HANDSHAKE, detail="the device connected many times at once")


def _with_seen(device: Device, seen: Seen | None) -> Device:
    if seen is None or (device.last_seen_at is not None and device.last_seen_at >= seen.at):
        return device
    return replace(
        device, last_seen_at=seen.at, last_ip=seen.ip if seen.ip is not None else device.last_ip
    )


@dataclass(frozen=True)
class _Done:
    request: PairingRequest | None
    device: Device | None
    replaced: Device | None = None


def _check_choice(role: Role | None, user: str | None) -> None:
    """The operator's choices on an approval: a real role, a valid user name."""
    if role is not None and not isinstance(role, Role):
        raise InvalidValue(f'role must be "admin" or "user", not {role!r}')
    if user is not None and valid_user(user) is None:
        raise InvalidValue(f"{user!r} is not a user name: {USER_RULE}")
