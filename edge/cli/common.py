"""What every subcommand shares: the --config option, settings loading, the store."""

from __future__ import annotations

import contextlib
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

    def show(self, file: Any = None) -> None:
        click.secho(f"edge: {self.format_message()}", err=True, fg="red")


class ConfigProblem(click.ClickException):
    """Usage or configuration error: exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.secho(f"edge: {self.format_message()}", err=True, fg="red")


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "-c",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar=CONFIG_ENV,
        default=None,
        help=f"YAML configuration file (default: ${CONFIG_ENV}, else built-in defaults).",
    )(func)


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
