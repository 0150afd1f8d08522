"""``edge devices``: list, approve, reject, revoke, rename, invite — straight on the store."""

from __future__ import annotations

import io
import ipaddress
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import click
import segno
from rich.console import Console
from rich.table import Table

from edge.cli.common import (
    Refused,
    config_option,
    emit,
    json_option,
    load,
    pairing_service,
    public_base,
)
from edge.config import PairingSettings, parse_duration
from edge.pairing.models import (
    INVITE_MAX_TTL,
    ROLE_UPGRADE,
    Device,
    Event,
    PairingRequest,
    Role,
    fingerprint,
)
from edge.pairing.policy import LOCAL_ACTOR
from edge.pairing.service import NotFound, PairingError, PairingService
from edge.pairing.store import MAX_EVENTS_PER_READ
from edge.serialize import device_json, invite_json, invite_url, request_json

ACTOR = "cli"
ROLE_CHOICE = click.Choice([r.value for r in Role])


def _span(seconds: float) -> str:
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _age(then: float | None, now: float) -> str:
    return "never" if then is None else f"{_span(now - then)} ago"


def _pending_table(requests: list[PairingRequest], now: float) -> Table:
    table = Table(title=f"Pending requests ({len(requests)})", title_justify="left")
    for column in ("REQUEST", "DEVICE", "NAME", "ROLE", "CLIENT IP", "AGE", "EXPIRES"):
        table.add_column(column, no_wrap=column != "NAME")
    for r in requests:
        role = f"{r.role} (upgrade)" if r.reason == "role-upgrade" else str(r.role)
        table.add_row(
            r.id,
            r.device_id[:12],
            r.name,
            role,
            r.client_ip or "-",
            _age(r.created_at, now),
            f"in {max(0, int(r.expires_at - now))}s",
        )
    return table


def idle_expiry_at(device: Device, idle_expiry: float | None) -> float | None:
    """When the idle sweep removes ``device`` unless it is seen again (None: never)."""
    if idle_expiry is None:
        return None
    last = device.last_seen_at if device.last_seen_at is not None else device.created_at
    return last + idle_expiry


def idle_expiry_of(device: Device, pairing: PairingSettings) -> float | None:
    """The idle limit that applies to ``device``: a local client's may have a shorter one."""
    limits = [pairing.device_idle_expiry]
    if device.approved_by == LOCAL_ACTOR:
        limits.append(pairing.local_device_idle_expiry)
    chosen = [limit for limit in limits if limit is not None]
    return min(chosen) if chosen else None


def _expires_in(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    if at <= now:
        return "at next sweep"
    return f"in {_span(at - now)}"


def _device_table(devices: list[Device], now: float, pairing: PairingSettings) -> Table:
    table = Table(title=f"Paired devices ({len(devices)})", title_justify="left")
    columns = ["DEVICE", "NAME", "USER", "ROLE", "STATUS", "LAST SEEN", "LAST IP", "APPROVED BY"]
    expiring = any(idle_expiry_of(d, pairing) is not None for d in devices)
    if expiring:
        columns.append("EXPIRES")
    for column in columns:
        table.add_column(column, no_wrap=column != "NAME")
    for d in devices:
        row = [
            d.id[:12],
            d.name,
            d.user or "-",
            str(d.role),
            d.status,
            _age(d.last_seen_at, now),
            d.last_ip or "-",
            d.approved_by,
        ]
        if expiring:
            row.append(_expires_in(idle_expiry_at(d, idle_expiry_of(d, pairing)), now))
        table.add_row(*row)
    return table


def recently_expired(service: PairingService) -> list[Event]:
    """``device.expired`` events still in the event log (about a day), oldest first."""
    latest = service.latest_seq()
    events = service.events_after(max(0, latest - MAX_EVENTS_PER_READ), MAX_EVENTS_PER_READ)
    return [event for event in events if event.type == "device.expired"]


def _expired_json(event: Event) -> dict[str, Any]:
    data: Mapping[str, object] = event.data
    last_seen = data.get("last_seen_at")
    return {
        "id": data.get("device_id"),
        "name": data.get("name"),
        "role": data.get("role"),
        "lastSeenAt": int(last_seen * 1000) if isinstance(last_seen, int | float) else None,
        "expiredAt": int(event.at * 1000),
    }


def _expired_note(events: list[Event], now: float) -> str:
    lines = [f"Removed for being idle (pairing.device_idle_expiry), last day: {len(events)}"]
    for event in events:
        data = event.data
        device_id, last_seen = str(data.get("device_id", "?")), data.get("last_seen_at")
        seen = _age(float(last_seen), now) if isinstance(last_seen, int | float) else "never"
        lines.append(
            f"  {device_id[:12]} ({data.get('name')}), {data.get('role')}: last seen {seen}, "
            f"removed {_age(event.at, now)}"
        )
    return "\n".join(lines)


def _fail(exc: PairingError) -> Refused:
    return Refused(str(exc))


@click.group("devices")
def devices() -> None:
    """Manage paired devices and pairing requests.

    \b
    Example:
      edge devices list
      edge devices approve --latest
      edge devices approve K7QF-2M9D
    """


def _address_key(device: Device) -> tuple[int, int, str]:
    """Addresses in numeric order (IPv4 before IPv6), devices never seen last."""
    if device.last_ip is None:
        return (2, 0, "")
    try:
        parsed = ipaddress.ip_address(device.last_ip)
    except ValueError:
        return (1, 0, device.last_ip)
    return (0, int(parsed) + (parsed.version - 4) * 2**32, "")


# How `edge devices list --sort` orders paired devices; the id breaks ties.
DEVICE_SORTS: dict[str, Callable[[Device], Any]] = {
    "paired": lambda d: d.created_at,
    "last-seen": lambda d: -(d.last_seen_at or 0.0),
    "name": lambda d: d.name.casefold(),
    "address": _address_key,
    "role": lambda d: str(d.role),
}


def sorted_devices(devices: list[Device], sort: str, *, reverse: bool = False) -> list[Device]:
    """``devices`` in the order ``--sort`` names (``DEVICE_SORTS``)."""
    key = DEVICE_SORTS[sort]
    ordered = sorted(devices, key=lambda d: (key(d), d.id))
    return ordered[::-1] if reverse else ordered


@devices.command("list")
@config_option
@json_option
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked devices.")
@click.option(
    "--sort",
    "sort",
    type=click.Choice(list(DEVICE_SORTS)),
    metavar="ORDER",
    default="paired",
    show_default=True,
    help="Order of the paired devices: paired (oldest first), last-seen (most recent "
    "first), name, address or role.",
)
@click.option("--reverse", is_flag=True, help="Reverse that order.")
def list_devices(
    config_path: str | None, as_json: bool, include_revoked: bool, sort: str, reverse: bool
) -> None:
    """Pending requests and paired devices.

    \b
    Example:
      edge devices list --all
      edge devices list --sort name
      edge devices list --json | jq '.requests[].id'
    """
    settings = load(config_path)
    with pairing_service(settings) as service:
        requests = service.list_requests()
        paired = sorted_devices(
            service.list_devices(include_revoked=include_revoked), sort, reverse=reverse
        )
        invites = service.list_invites()
        expired = recently_expired(service)
    if as_json:
        devices_out = []
        for d in paired:
            expires_at = idle_expiry_at(d, idle_expiry_of(d, settings.pairing))
            out = device_json(d)
            out["idleExpiresAt"] = None if expires_at is None else int(expires_at * 1000)
            devices_out.append(out)
        emit(
            {
                "requests": [request_json(r) for r in requests],
                "devices": devices_out,
                "invites": [invite_json(i) for i in invites],
                "expired": [_expired_json(e) for e in expired],
            }
        )
        return
    now = time.time()
    console = Console(width=140)
    console.print(_pending_table(requests, now))
    if requests:
        console.print(
            f"Approve with: edge devices approve {requests[-1].id}   (as user; --role admin for "
            "admin)"
        )
    console.print(_device_table(paired, now, settings.pairing))
    if expired:
        console.print(_expired_note(expired, now), highlight=False)


def describe_request(request: PairingRequest, now: float) -> list[str]:
    """What an operator is about to approve: who asks, from where, for which role."""
    role = str(request.role) + (
        " (upgrade of a paired user)" if request.reason == ROLE_UPGRADE else ""
    )
    return [
        f"request {request.id}",
        f"  asks for:    {role}",
        f"  name:        {request.name!r} (chosen by the device)",
        f"  address:     {request.client_ip or 'unknown'}",
        f"  fingerprint: {fingerprint(request.device_id)}  (device {request.device_id[:12]})",
        f"  browser:     {request.user_agent or 'not sent'}",
        f"  asked:       {_age(request.created_at, now)}, expires in "
        f"{_span(request.expires_at - now)}",
    ]


def approve_command(request: PairingRequest, role: Role | None = None) -> str:
    return f"edge devices approve {request.id}" + (f" --role {role}" if role else "")


@devices.command("approve")
@config_option
@click.argument("request_id", required=False)
@click.option(
    "--latest",
    is_flag=True,
    help="Show the newest pending request and the command that approves it (approves nothing).",
)
@click.option(
    "--role",
    type=ROLE_CHOICE,
    default=None,
    help="Role to grant (default: user, whatever the device asked for).",
)
@click.option(
    "--user",
    default=None,
    metavar="USER",
    help="Login upstream apps know the device by (Remote-User), e.g. alice.",
)
@json_option
def approve(
    config_path: str | None,
    request_id: str | None,
    latest: bool,
    role: str | None,
    user: str | None,
    as_json: bool,
) -> None:
    """Approve a pending request by its id, as user unless --role admin is given.

    The request is shown first: the role it asks for, the name the device
    chose, its address and the fingerprint its page shows. --latest only shows
    the newest request and prints the command to approve it, so that nobody
    approves a request that arrived a moment before without seeing it.

    \b
    Example:
      edge devices approve --latest
      edge devices approve K7QF-2M9D --user alice
      edge devices approve K7QF-2M9D --role admin
    """
    if bool(request_id) == latest:
        raise click.UsageError("give a REQUEST id or --latest (one of them)")
    settings = load(config_path)
    granted = Role(role) if role else None
    now = time.time()
    with pairing_service(settings) as service:
        try:
            if latest:
                newest = service.latest_request()
                _preview(newest, now, as_json)
                return
            assert request_id is not None
            try:
                asked: PairingRequest | None = service.pending_request(request_id)
            except NotFound:
                asked = None  # the approval below says why (expired, decided, a newer one)
            device = service.approve(
                request_id, role=granted, actor=ACTOR, user=user, at_most=Role.USER
            )
        except PairingError as exc:
            raise _fail(exc) from None
    if as_json:
        request = request_json(asked) if asked is not None else None
        emit({"approved": device_json(device), "request": request})
        return
    for line in describe_request(asked, now) if asked is not None else []:
        click.echo(line)
    as_user = f", user {device.user}" if device.user else ""
    click.echo(f"approved {device.name!r} ({device.id[:12]}) as {device.role}{as_user}")
    if asked is not None and asked.role is Role.ADMIN and device.role is not Role.ADMIN:
        click.echo(
            "  it asked for admin and was given user: admin is granted only with --role admin; "
            "the device may ask for admin again after pairing.decline_cooldown."
        )


def _preview(request: PairingRequest, now: float, as_json: bool) -> None:
    command = approve_command(request)
    admin = approve_command(request, Role.ADMIN) if request.role is Role.ADMIN else None
    if as_json:
        emit({"request": request_json(request), "command": command, "adminCommand": admin})
        return
    for line in describe_request(request, now):
        click.echo(line)
    click.echo("Nothing was approved. Check the fingerprint against the device's page, then run:")
    click.echo(f"  {command}")
    if admin is not None:
        click.echo(f"  {admin}   (grants the admin role it asks for)")


@devices.command("reject")
@config_option
@click.argument("request_id")
@json_option
def reject(config_path: str | None, request_id: str, as_json: bool) -> None:
    """Reject a pending request.

    \b
    Example:
      edge devices reject K7QF-2M9D
    """
    with pairing_service(load(config_path)) as service:
        try:
            request = service.reject(request_id, actor=ACTOR)
        except PairingError as exc:
            raise _fail(exc) from None
    if as_json:
        emit({"rejected": request_json(request)})
        return
    click.echo(f"rejected {request.id} ({request.name!r})")


@devices.command("revoke")
@config_option
@click.argument("device_id")
@json_option
def revoke(config_path: str | None, device_id: str, as_json: bool) -> None:
    """Revoke a device (id or unique prefix); its live sockets close within 2 seconds.

    \b
    Example:
      edge devices revoke 3f9a1c2b7d4e
    """
    with pairing_service(load(config_path)) as service:
        try:
            device = service.revoke(device_id, actor=ACTOR)
        except PairingError as exc:
            raise _fail(exc) from None
    if as_json:
        emit({"revoked": device_json(device)})
        return
    click.echo(f"revoked {device.name!r} ({device.id[:12]})")


@devices.command("rename")
@config_option
@click.argument("device_id")
@click.argument("name")
@json_option
def rename(config_path: str | None, device_id: str, name: str, as_json: bool) -> None:
    """Give a device a new display name.

    \b
    Example:
      edge devices rename 3f9a1c2b7d4e "Kitchen tablet"
    """
    with pairing_service(load(config_path)) as service:
        try:
            device = service.rename(device_id, name, actor=ACTOR)
        except PairingError as exc:
            raise _fail(exc) from None
    if as_json:
        emit({"renamed": device_json(device)})
        return
    click.echo(f"renamed {device.id[:12]} to {device.name!r}")


@devices.command("assign")
@config_option
@click.argument("device_id")
@click.argument("user")
@json_option
def assign(config_path: str | None, device_id: str, user: str, as_json: bool) -> None:
    """Set the user (Remote-User to upstreams) of a device; '-' clears it.

    \b
    Example:
      edge devices assign 3f9a1c2b7d4e alice
      edge devices assign 3f9a1c2b7d4e -
    """
    with pairing_service(load(config_path)) as service:
        try:
            device = service.assign_user(device_id, None if user == "-" else user, actor=ACTOR)
        except PairingError as exc:
            raise _fail(exc) from None
    if as_json:
        emit({"assigned": device_json(device)})
    elif device.user is None:
        click.echo(f"{device.id[:12]} ({device.name!r}) has no user: upstreams see its device id")
    else:
        click.echo(f"{device.id[:12]} ({device.name!r}) is user {device.user}")


def parse_invite_ttl(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not 0 < value <= INVITE_MAX_TTL:
        raise click.BadParameter(
            f"must be between 1 second and {int(INVITE_MAX_TTL // 86_400)} days"
        )
    return value


@devices.command("invite")
@config_option
@click.option(
    "--role", type=ROLE_CHOICE, default="user", show_default=True, help="Role the device gets."
)
@click.option("--name", default=None, help="Name the device will get, e.g. kiosk.")
@click.option(
    "--ttl", default="10m", show_default=True, help="How long the invite lives (90s, 10m, 2h, 1d)."
)
@click.option(
    "--url",
    "base_url",
    default=None,
    help="Dashboard base URL to put in the link, e.g. https://edge.example.com.",
)
@click.option(
    "--qr/--no-qr",
    default=None,
    help="Print the link as a QR code (default: when the output is a terminal).",
)
@json_option
def invite(
    config_path: str | None,
    role: str,
    name: str | None,
    ttl: str,
    base_url: str | None,
    qr: bool | None,
    as_json: bool,
) -> None:
    """Create a single-use invite that pairs a headless device at once.

    \b
    Example:
      edge devices invite --name kiosk --ttl 1h --url https://edge.example.com
    """
    settings = load(config_path)
    seconds = parse_invite_ttl(ttl)
    base = public_base(settings, base_url)
    with pairing_service(settings) as service:
        try:
            created, code = service.create_invite(
                role=Role(role), name=name, ttl=seconds, actor=ACTOR
            )
        except PairingError as exc:
            raise _fail(exc) from None
    url = invite_url(base, code)
    if as_json:
        emit({"invite": invite_json(created), "code": code, "url": url})
        return
    click.echo(f"invite {created.id} for a {role} device, valid for {ttl}, single use")
    click.echo(f"  code: {code}")
    click.echo(f"  url:  {url}")
    click.echo(f"  CLI:  edge pair --url {base} --invite {code}")
    if qr if qr is not None else sys.stdout.isatty():
        click.echo(terminal_qr(url), nl=False)


def terminal_qr(url: str) -> str:
    """The invite link as a QR code of block characters, for a phone pointed at the terminal."""
    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, compact=True)
    return out.getvalue()


@devices.command("invites")
@config_option
@click.option("--cancel", "cancel_id", default=None, help="Cancel the invite with this id.")
@json_option
def invites(config_path: str | None, cancel_id: str | None, as_json: bool) -> None:
    """List open invites, or cancel one.

    \b
    Example:
      edge devices invites
      edge devices invites --cancel inv_4QZ7
    """
    with pairing_service(load(config_path)) as service:
        try:
            if cancel_id:
                cancelled = service.cancel_invite(cancel_id, actor=ACTOR)
                if as_json:
                    emit({"cancelled": invite_json(cancelled)})
                else:
                    click.echo(f"cancelled invite {cancelled.id}")
                return
            rows = service.list_invites()
        except PairingError as exc:
            raise _fail(exc) from None
    if as_json:
        emit({"invites": [invite_json(i) for i in rows]})
        return
    now = time.time()
    table = Table(title=f"Invites ({len(rows)})", title_justify="left")
    for column in ("INVITE", "ROLE", "NAME", "CREATED", "EXPIRES", "USED"):
        table.add_column(column)
    for i in rows:
        table.add_row(
            i.id,
            str(i.role),
            i.name or "-",
            _age(i.created_at, now),
            f"in {max(0, int(i.expires_at - now))}s",
            _age(i.used_at, now) if i.used_at else "no",
        )
    Console(width=140).print(table)
