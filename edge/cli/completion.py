"""``edge completion bash|zsh|fish``: the shell completion script, from click's own machinery."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from edge.cli.common import emit, json_option

PROG_NAME = "edge"
# The variable click's completion scripts set when they ask ``edge`` for candidates.
COMPLETE_VAR = "_EDGE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def completion_script(shell: str) -> str:
    """The script that makes ``shell`` complete ``edge``'s commands and options."""
    from edge.cli import cli

    completer = get_completion_class(shell)
    if completer is None:  # SHELLS holds only shells click knows
        raise click.UsageError(f"no completion for {shell}")
    return completer(cli, {}, PROG_NAME, COMPLETE_VAR).source()


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@json_option
def completion(shell: str, as_json: bool) -> None:
    """Print the completion script for SHELL; load it from the shell's startup file.

    \b
    Example:
      edge completion bash > ~/.local/share/bash-completion/completions/edge
      echo 'eval "$(edge completion zsh)"' >> ~/.zshrc
      edge completion fish > ~/.config/fish/completions/edge.fish
    """
    script = completion_script(shell)
    if as_json:
        emit({"shell": shell, "script": script})
    else:
        click.echo(script)
