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
from pathlib import Path
from typing import Any, TypeVar

import click

from edge.config import CONFIG_ENV, ConfigError, Settings, load_settings
from edge.gateway_token import GatewayTokenError, load_gateway_token
from edge.pairing.service import PairingService
from edge.pairing.store import StoreError, open_store
from edge.pairing.tokens import generate_secret
from edge.running import RunningGateway, running_gateways

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
        help="YAML configuration file, e.g. /etc/edge/edge.yaml (default: the running "
        "gateway's, else built-in defaults).",
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


ROOT_CONFIG_KEY = "edge.root_config"  # ``edge -c FILE <command>``, in the context's meta


def chosen_config(config_path: str | None) -> str | None:
    """The file the person chose: ``-c`` after the command, then ``-c`` before it, then
    ``$EDGE_CONFIG``; None when none of them names one."""
    context = click.get_current_context(silent=True)
    if context is None:
        return config_path
    root = context.meta.get(ROOT_CONFIG_KEY)
    source = context.get_parameter_source("config_path")
    if config_path is not None and source is click.core.ParameterSource.COMMANDLINE:
        return config_path
    return root if root is not None else config_path


def load(config_path: str | None, *, discover: bool = True) -> Settings:
    """The settings a command works on.

    With no file chosen, a management command works on the gateway that runs
    (``edge.running``): the defaults would be another world, with another
    ``data_dir``. ``edge serve`` itself does not look (``discover=False``).
    """
    path = chosen_config(config_path)
    found: RunningGateway | None = None
    if path is None and discover:
        found = _the_running_gateway()
        if found is not None:
            path = found.config
            note(f"edge: using the running gateway's configuration ({found.describe()})")
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    if found is not None and found.config is None:
        # Started on the defaults from another directory: its ./data is not ours.
        settings = settings.model_copy(update={"data_dir": Path(found.data_dir)})
    return settings


def _the_running_gateway() -> RunningGateway | None:
    gateways = running_gateways()
    worlds = {(g.config, g.data_dir) for g in gateways}
    if len(worlds) > 1:
        listed = "; ".join(g.describe() for g in gateways)
        raise ConfigProblem(f"several gateways are running ({listed}): choose one with -c <file>")
    return gateways[0] if gateways else None


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


def public_base(settings: Settings, given: str | None = None) -> str:
    """The address another device reaches the dashboard at: ``--url``, else server.public_url.

    Without either, the only address Edge knows is the one it binds. When that
    is loopback (or every address, shown as 127.0.0.1), a link built on it
    works on this machine only: printed for a phone, it is a dead end. It is
    refused instead, with the way out.
    """
    if given:
        return given.rstrip("/")
    server = settings.server
    if server.public_url:
        return server.public_url
    if server.binds_loopback or server.host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared
        raise ConfigProblem(
            f"server.public_url is not set and the gateway listens on {server.host}:"
            f"{server.port}: a link to that works on this machine only. Set server.public_url "
            "to the address other devices reach (e.g. `server: {public_url: "
            "https://edge.example.com}`, your reverse proxy's), or pass --url"
        )
    return local_url(server.host, server.port).rstrip("/")
