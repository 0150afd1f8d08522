"""The ``edge`` command line.

Exit codes: 0 ok, 1 refused or not found, 2 usage or configuration error.
"""

from __future__ import annotations

import sys

import click

from edge import __version__
from edge.cli.common import EXIT_USAGE
from edge.cli.devices import devices
from edge.cli.doctor import doctor
from edge.cli.explain import config_group, explain
from edge.cli.pair import dashboard, pair
from edge.cli.serve import gateway_group, serve
from edge.cli.store import store_group
from edge.cli.token import token


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edge")
def cli() -> None:
    """Edge: a reverse-proxy-aware gateway with device pairing."""


for command in (
    serve,
    gateway_group,
    explain,
    config_group,
    devices,
    token,
    doctor,
    dashboard,
    pair,
    store_group,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    try:
        result = cli.main(args=argv, prog_name="edge", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
