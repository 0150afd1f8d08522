"""``edge notify status``: where each webhook's deliveries stand, read from ``data_dir``."""

from __future__ import annotations

import time
from datetime import datetime

import click

from edge.cli.common import config_option, emit, json_option, load
from edge.notify_state import NotifyState, TargetStatus


@click.group("notify")
def notify() -> None:
    """Webhook notifications (notify.webhooks).

    \b
    Example:
      edge notify status
    """


def _when(seconds: float | None, now: float) -> str:
    if seconds is None:
        return "never"
    stamp = datetime.fromtimestamp(seconds).isoformat(sep=" ", timespec="seconds")
    ago = now - seconds
    if ago >= 0:
        return f"{stamp} ({ago:.0f}s ago)"
    return f"{stamp} (in {-ago:.0f}s)"


def _describe(status: TargetStatus, events: list[str], now: float) -> list[str]:
    lines = [
        status.url,
        f"  events                {', '.join(events)}",
        f"  last attempt          {_when(status.last_attempt_at, now)}",
        f"  last success          {_when(status.last_success_at, now)}",
        f"  consecutive failures  {status.consecutive_failures}",
    ]
    if status.last_error is not None:
        lines.append(
            f"  last error            {_when(status.last_error_at, now)}: {status.last_error}"
        )
    waiting = f"  pending               {status.pending}"
    if status.pending and status.next_attempt_at is not None:
        waiting += f", next attempt {_when(status.next_attempt_at, now)}"
    lines.append(waiting)
    return lines


@notify.command("status")
@config_option
@json_option
def status(config_path: str | None, as_json: bool) -> None:
    """Show each webhook's delivery state: last attempt, success and error, failures, pending.

    Read from what the gateway's workers record in data_dir (notify/state.json),
    so it works while the gateway runs and after it stopped; pending deliveries
    are those waiting in a running worker's memory.

    \b
    Example:
      edge notify status -c /etc/edge/edge.yaml
      edge notify status --json | jq '.webhooks[] | select(.consecutiveFailures > 0)'
    """
    settings = load(config_path)
    state = NotifyState(settings.data_dir)
    webhooks = [(w, state.status(w.url)) for w in settings.notify.webhooks]
    if as_json:
        emit(
            {
                "webhooks": [
                    {**found.to_json(), "events": list(webhook.events)}
                    for webhook, found in webhooks
                ]
            }
        )
        return
    if not webhooks:
        click.echo("no webhooks configured (notify.webhooks)")
        return
    now = time.time()
    for number, (webhook, found) in enumerate(webhooks):
        if number:
            click.echo()
        click.echo("\n".join(_describe(found, list(webhook.events), now)))
