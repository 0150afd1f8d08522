"""``edge auth``: the lockouts of addresses that guessed wrong, and lifting one.

A lockout (``auth.rate_limit``) refuses guesses of the gateway token and of
invites from an address; devices that are paired keep working through it. An
operator who knows the address is innocent (a colleague's typo behind the
office NAT) lifts it here: the change is a store event, audited like every
other, and every running gateway process drops the lockout from its cache
when the event reaches it.
"""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.table import Table

from edge.cli.common import Refused, config_option, emit, json_option, load, pairing_service
from edge.pairing.service import PairingError

ACTOR = "cli"


@click.group("auth")
def auth_group() -> None:
    """Lockouts of addresses after failed attempts (auth.rate_limit).

    \b
    Example:
      edge auth lockouts
      edge auth unlock 203.0.113.9
    """


@auth_group.command("lockouts")
@config_option
@json_option
def lockouts(config_path: str | None, as_json: bool) -> None:
    """List the addresses locked out now, with the time left.

    \b
    Example:
      edge auth lockouts
      edge auth lockouts --json | jq '.lockouts[].client'
    """
    with pairing_service(load(config_path)) as service:
        rows = service.lockouts()
    now = time.time()
    if as_json:
        emit(
            {
                "lockouts": [
                    {"client": client, "until": int(until * 1000), "failuresSince": count}
                    for client, until, count in rows
                ]
            }
        )
        return
    if not rows:
        click.echo("no address is locked out")
        return
    table = Table(title=f"Locked out ({len(rows)})", title_justify="left")
    for column in ("ADDRESS", "ENDS IN", "FAILURES SINCE"):
        table.add_column(column, no_wrap=True)
    for client, until, count in rows:
        table.add_row(client, f"{max(0, int(until - now)) + 1}s", str(count))
    Console(width=140).print(table)
    click.echo(f"Lift one with: edge auth unlock {rows[0][0]}")


@auth_group.command("unlock")
@config_option
@click.argument("address")
@json_option
def unlock(config_path: str | None, address: str, as_json: bool) -> None:
    """Lift the lockout of an address (IPv6: any address of its /64, or the /64 as listed).

    \b
    Example:
      edge auth unlock 203.0.113.9
      edge auth unlock 2001:db8:1:2::/64
    """
    with pairing_service(load(config_path)) as service:
        try:
            key, until = service.unlock(address, actor=ACTOR)
        except PairingError as exc:
            raise Refused(str(exc)) from None
    if as_json:
        emit({"unlocked": {"client": key, "wasLockedUntil": int(until * 1000)}})
        return
    left = max(0, int(until - time.time())) + 1
    click.echo(f"lifted the lockout of {key} ({left}s were left); it may try again at once")
