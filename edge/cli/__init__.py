"""The ``edge`` command line.

Exit codes: 0 ok, 1 refused or not found, 2 usage or configuration error, on
every path: click's own usage errors, Edge's checks, and ``--json`` runs alike.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from edge import __version__
from edge.cli.auth import auth_group
from edge.cli.common import EXIT_REFUSED, EXIT_USAGE, ROOT_CONFIG_KEY, emit, json_option
from edge.cli.completion import completion
from edge.cli.config import config_group
from edge.cli.devices import devices
from edge.cli.doctor import doctor
from edge.cli.explain import explain
from edge.cli.notify import notify
from edge.cli.pair import dashboard, pair
from edge.cli.serve import gateway_group, serve
from edge.cli.store import store_group
from edge.cli.token import token

ENVIRONMENT_HELP = """\b
Environment (see docs/configuration.md):
  EDGE_CONFIG                 the configuration file when -c is not given
  EDGE_GATEWAY_TOKEN(_FILE)   the gateway token (overrides auth.token, auth.token_file)
  EDGE_STORE_PASSWORD(_FILE)  the Redis password, put into store.url
  EDGE_METRICS_TOKEN(_FILE)   metrics.bearer_token
  EDGE_PAIR_DIR               where `edge pair` keeps its key and device token
  EDGE_RUNTIME_DIR            where `edge serve` records itself for the other commands
"""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=ENVIRONMENT_HELP,
)
@click.version_option(__version__, prog_name="edge", help="Show the version and exit.")
@click.option(
    "--config",
    "-c",
    "root_config",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML configuration file for the command that follows (as its own -c).",
)
@click.pass_context
def cli(context: click.Context, root_config: str | None) -> None:
    """Edge: a reverse-proxy-aware gateway with device pairing.

    Without -c (or EDGE_CONFIG) a command works on the running gateway's
    configuration, else on the built-in defaults.

    \b
    Example:
      edge doctor -c /etc/edge/edge.yaml
      edge -c /etc/edge/edge.yaml devices list
      edge devices list --json
    """
    context.meta[ROOT_CONFIG_KEY] = root_config


for command in (
    serve,
    gateway_group,
    explain,
    config_group,
    devices,
    auth_group,
    token,
    doctor,
    dashboard,
    pair,
    store_group,
    notify,
    completion,
):
    cli.add_command(command)


def _wants_json(args: Sequence[str]) -> bool:
    """Whether ``--json`` was asked for, so that even a usage error comes as JSON."""
    return "--json" in args[: args.index("--")] if "--" in args else "--json" in args


def _fail(as_json: bool, kind: str, detail: str, code: int, exc: click.ClickException) -> int:
    if as_json:
        emit({"error": kind, "detail": detail})
    else:
        exc.show()
    return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    as_json = _wants_json(args)
    try:
        result = cli.main(args=args, prog_name="edge", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        if as_json:
            emit({"error": "aborted", "detail": "aborted"})
        else:
            click.echo("aborted", err=True)
        return EXIT_REFUSED
    except click.UsageError as exc:
        return _fail(as_json, "usage", exc.format_message(), EXIT_USAGE, exc)
    except click.ClickException as exc:
        kind = str(getattr(exc, "kind", "refused" if exc.exit_code == EXIT_REFUSED else "config"))
        return _fail(as_json, kind, exc.format_message(), exc.exit_code, exc)
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


__all__ = ["cli", "json_option", "main"]

if __name__ == "__main__":
    sys.exit(main())
