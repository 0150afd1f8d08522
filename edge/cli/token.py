"""``edge token show|generate|rotate``: the gateway token."""

from __future__ import annotations

import click

from edge.cli.common import ConfigProblem, Refused, config_option, emit, json_option, load
from edge.gateway_token import (
    GatewayTokenError,
    generated_token_path,
    load_gateway_token,
    rotate_gateway_token,
)


@click.group("token")
def token() -> None:
    """Show, create or rotate the gateway token (what a new device needs to ask to pair).

    \b
    Example:
      edge token show
    """


@token.command("show")
@config_option
@json_option
def show(config_path: str | None, as_json: bool) -> None:
    """Print the gateway token (to stdout only; never logged).

    \b
    Example:
      edge pair --url https://edge.example.com --token "$(edge token show)"
    """
    settings = load(config_path)
    try:
        value = load_gateway_token(settings, create=False)
    except GatewayTokenError as exc:
        raise Refused(str(exc)) from None
    if as_json:
        emit({"token": value.value, "source": value.source})
    else:
        click.echo(value.value)


@token.command("generate")
@config_option
@json_option
def generate(config_path: str | None, as_json: bool) -> None:
    """Create the gateway token file if there is none yet (idempotent).

    \b
    Example:
      edge token generate -c /etc/edge/edge.yaml
    """
    settings = load(config_path)
    if settings.auth.token is not None:
        if as_json:
            emit({"created": False, "path": None, "inline": True})
        else:
            click.echo("a gateway token is already set inline (auth.token or EDGE_GATEWAY_TOKEN)")
        return
    path = settings.auth.token_file or generated_token_path(settings)
    if path.exists():
        if as_json:
            emit({"created": False, "path": str(path), "inline": False})
        else:
            click.echo(f"gateway token already exists in {path}")
        return
    try:
        rotate_gateway_token(settings)
    except (GatewayTokenError, OSError) as exc:
        raise ConfigProblem(str(exc)) from None
    if as_json:
        emit({"created": True, "path": str(path), "inline": False})
    else:
        click.echo(f"gateway token written to {path} (0600); show it with `edge token show`")


@token.command("rotate")
@config_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def rotate(config_path: str | None, yes: bool, as_json: bool) -> None:
    """Replace the gateway token; paired devices keep working, new devices need the new one.

    \b
    Example:
      edge token rotate --yes && edge gateway reload
    """
    settings = load(config_path)
    if not yes:
        click.confirm(
            "Rotate the gateway token? Devices that have not paired yet need the new one",
            abort=True,
            err=True,
        )
    try:
        new = rotate_gateway_token(settings)
    except (GatewayTokenError, OSError) as exc:
        raise Refused(str(exc)) from None
    if as_json:
        emit({"rotated": True, "path": None if new.path is None else str(new.path)})
        return
    click.echo(
        f"gateway token rotated in {new.path}; running gateways pick it up on `edge gateway reload`"
    )
