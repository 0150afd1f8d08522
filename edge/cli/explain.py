"""``edge explain``: how the gateway would resolve a request, without sending one."""

from __future__ import annotations

import os
import pwd

import click

from edge.cli.common import config_option, emit, json_option, load
from edge.config.policies import build_policy
from edge.net import PeerOwner, describe, parse_ip, resolve
from edge.serialize import resolution_json


def _header_pairs(raw_headers: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    pairs = []
    for raw in raw_headers:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise click.BadParameter(f"{raw!r} is not 'Name: value'", param_hint="-H")
        pairs.append(
            (name.strip().lower().encode("latin-1"), value.strip().encode("latin-1", "replace"))
        )
    return pairs


@click.command("explain")
@config_option
@click.option(
    "--peer", required=True, help="Address the connection comes from, e.g. 127.0.0.1 or 'unix'."
)
@click.option(
    "--peer-port",
    type=click.IntRange(0, 65535),
    default=50000,
    show_default=True,
    help="Port the connection comes from.",
)
@click.option(
    "-H", "--header", "headers", multiple=True, help="A request header, 'Name: value' (repeatable)."
)
@click.option(
    "--peer-user",
    default=None,
    help="OS user owning the client's end of the connection (as the kernel would say).",
)
@click.option("--peer-uid", type=click.IntRange(0), default=None, help="The same, as a uid.")
@click.option(
    "--scheme",
    type=click.Choice(["http", "https"]),
    default="http",
    show_default=True,
    help="Scheme the connection itself uses (before any proxy header).",
)
@click.option("--websocket", is_flag=True, help="Resolve as a WebSocket request.")
@json_option
def explain(
    config_path: str | None,
    peer: str,
    peer_port: int,
    headers: tuple[str, ...],
    scheme: str,
    websocket: bool,
    as_json: bool,
    peer_user: str | None,
    peer_uid: int | None,
) -> None:
    """Show how the gateway would resolve a request, hop by hop, and why it is local or not.

    \b
    Example:
      edge explain --peer 127.0.0.1 -H 'X-Forwarded-For: 203.0.113.7' -H 'Host: edge.example.com'
      edge explain --peer 127.0.0.1 --peer-user www-data -H 'Host: localhost'

    Under local.peer_check: uid a loopback client is local only if its connection
    belongs to the gateway's user (taken to be the user running this command);
    say who owns it with --peer-user or --peer-uid, or it is unknown, as it is for
    a connection that did not come through `edge serve`.
    """
    settings = load(config_path)
    policy = build_policy(settings)
    if peer.lower() == "unix":
        peer_tuple = None
    else:
        if parse_ip(peer) is None:
            raise click.BadParameter(f"{peer!r} is not an IP address", param_hint="--peer")
        peer_tuple = (peer, peer_port)
    resolution = resolve(
        peer_tuple,
        _header_pairs(headers),
        policy,
        scheme=scheme,
        websocket=websocket,
        peer_owner=_peer_owner(peer_user, peer_uid),
    )
    if as_json:
        emit(resolution_json(resolution))
    else:
        click.echo(describe(resolution, policy))


def _name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def _peer_owner(user: str | None, uid: int | None) -> PeerOwner:
    """The owner the operator says the connection has, against the user running this command."""
    me = os.geteuid()
    if user is not None and uid is not None:
        raise click.BadParameter(
            "give --peer-user or --peer-uid, not both", param_hint="--peer-uid"
        )
    if user is not None:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            raise click.BadParameter(
                f"{user!r} is not a user on this machine (see `getent passwd`)",
                param_hint="--peer-user",
            ) from None
    if uid is None:
        return PeerOwner(
            None, None, me, _name(me), "not given: say who owns it with --peer-user or --peer-uid"
        )
    return PeerOwner(uid, _name(uid), me, _name(me), "given on the command line")


__all__ = ["explain"]
