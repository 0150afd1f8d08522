"""What every subcommand shares: --config and --json, settings loading, the store.

Every command takes ``--json``: it then prints exactly one JSON document on
stdout (keys in camelCase, as the REST API and the socket name theirs; see
``edge.serialize``) and anything for people on stderr. A failure under
``--json`` is the document ``{"error": KIND, "detail": MESSAGE}`` on stdout,
with the same exit code as without it (``edge.cli.main``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from edge.config import CONFIG_ENV, ConfigError, Settings, load_settings
from edge.gateway_token import GatewayTokenError, load_gateway_token
from edge.pairing.service import PairingService
from edge.pairing.store import StoreError, open_store
from edge.pairing.tokens import generate_secret

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


class Refused(click.ClickException):
    """Refused or not found: exit 1."""

    exit_code = EXIT_REFUSED
    kind = "refused"

    def show(self, file: Any = None) -> None:
        click.secho(f"edge: {self.format_message()}", err=True, fg="red")


class ConfigProblem(click.ClickException):
    """Usage or configuration error: exit 2."""

    exit_code = EXIT_USAGE
    kind = "config"

    def show(self, file: Any = None) -> None:
        click.secho(f"edge: {self.format_message()}", err=True, fg="red")


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "-c",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar=CONFIG_ENV,
        show_envvar=True,
        default=None,
        help="YAML configuration file (default: built-in defaults), e.g. /etc/edge/edge.yaml.",
    )(func)


def json_option(func: F) -> F:
    """``--json``: the one machine-readable form every command has."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document on stdout (camelCase keys); errors as {error, detail}.",
    )(func)


def emit(document: object) -> None:
    """Print ``document`` as the command's whole stdout under ``--json``."""
    click.echo(json.dumps(document, indent=2))


def note(message: str) -> None:
    """A line for people that must never mix into a JSON document: stderr."""
    click.echo(message, err=True)


def load(config_path: str | None) -> Settings:
    try:
        return load_settings(config_path)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None


@contextlib.contextmanager
def pairing_service(settings: Settings) -> Iterator[PairingService]:
    """The pairing service on the configured store, as the gateway itself would open it."""
    from edge.config.policies import build_pairing_policy

    try:
        token = load_gateway_token(settings, create=False).value
    except GatewayTokenError:
        # Managing devices needs no gateway token; an unguessable stand-in never matches.
        token = generate_secret()
    try:
        store = open_store(settings.store.url, settings.data_dir)
    except StoreError as exc:
        raise ConfigProblem(str(exc)) from None
    try:
        yield PairingService(store, token, build_pairing_policy(settings))
    finally:
        store.close()


def local_url(host: str, port: int, path: str = "/") -> str:
    """The URL of a listener as this machine reaches it: a wildcard bind is 127.0.0.1."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - display only
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}{path}"
