"""``edge store``: what the pairing store holds, and moving it between SQLite and Redis.

``migrate`` copies devices (with their token hashes, so paired devices keep
working), pairing requests with their settlement, invites, failure counters
and the event position in one write on the destination, then reads the
destination back and compares. It refuses a destination that holds anything
unless ``--force`` (which replaces it). Run it with the gateways stopped: a
change made on the source meanwhile is reported, not copied.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click

from edge.cli.common import ConfigProblem, Refused, config_option, emit, json_option, load
from edge.config import Settings
from edge.pairing.models import PAIRED, Role
from edge.pairing.store import (
    RedisInfo,
    SnapshotStore,
    Store,
    StoreError,
    StoreSnapshot,
    open_store,
    redact_url,
    sqlite_path_of,
    start_over,
)
from edge.serialize import camel_keys


@click.group("store")
def store_group() -> None:
    """Inspect the pairing store, or migrate it between SQLite and Redis.

    \b
    Example:
      edge store info
    """


# -- opening stores -------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(url: str | None, settings: Settings, *, must_exist: bool) -> Iterator[Store]:
    """The store at ``url`` (None: the configured one); a missing SQLite file is refused."""
    path = sqlite_path_of(url, settings.data_dir)
    if must_exist and path is not None and not path.is_file():
        raise Refused(
            f"there is no SQLite store at {path} (the gateway creates it at its first start)"
        )
    try:
        store = open_store(url, settings.data_dir)
    except StoreError as exc:
        raise ConfigProblem(str(exc)) from None
    try:
        yield store
    except StoreError as exc:
        raise Refused(str(exc)) from None
    finally:
        store.close()


def _snapshots(store: Store) -> SnapshotStore:
    if not isinstance(store, SnapshotStore):
        raise Refused(f"{store.description} cannot be exported or imported")
    return store


# -- info -----------------------------------------------------------------------------------------


def store_facts(store: Store, now: float) -> dict[str, Any]:
    """What ``edge store info`` reports: backend, where, schema, counts, server settings.

    The keys are Python's; ``--json`` prints them in camelCase like every document.
    """
    devices = store.list_devices(include_revoked=True)
    paired = [d for d in devices if d.status == PAIRED]
    invites = store.list_invites()
    facts: dict[str, Any] = {
        "store": store.description,
        "devices": {
            "paired": len(paired),
            "revoked": len(devices) - len(paired),
            "by_role": {role.value: sum(d.role is role for d in paired) for role in Role},
        },
        "pending_requests": len(store.list_requests(now)),
        "invites": {
            "usable": sum(i.usable(now) for i in invites),
            "used_or_expired": sum(not i.usable(now) for i in invites),
        },
        "event_seq": store.latest_seq(),
        "warnings": [],
    }
    about = store.about()
    facts.update(backend=about.kind, schema=about.schema)
    if about.file_bytes is not None:
        facts["file_bytes"] = about.file_bytes
    server = about.server
    if server is not None:
        facts["redis"] = {
            "version": server.version,
            "role": server.role,
            "appendonly": server.appendonly,
            "appendfsync": server.appendfsync,
            "maxmemory_policy": server.maxmemory_policy,
            "event_log_length": server.event_log_length,
        }
        facts["warnings"] = redis_warnings(server)
    return facts


def redis_warnings(server: RedisInfo) -> list[str]:
    """The Redis settings under which Edge can lose what it acknowledged."""
    warnings = []
    if not server.appendonly:
        warnings.append(
            "appendonly is off: approvals made since the last snapshot are lost when Redis "
            "restarts; set appendonly yes"
        )
    elif server.appendfsync == "no":
        warnings.append(
            "appendfsync is no: the operating system decides when approvals reach the disk; "
            "use everysec or always"
        )
    if server.maxmemory_policy != "noeviction":
        warnings.append(
            f"maxmemory-policy is {server.maxmemory_policy}: Redis may evict Edge's devices "
            "and event counter under memory pressure; set maxmemory-policy noeviction"
        )
    if server.role != "master":
        warnings.append(f"this Redis is a {server.role}: point store.url at the primary")
    return warnings


@store_group.command("info")
@config_option
@click.option(
    "--url",
    default=None,
    help="Inspect this store URL instead of store.url, e.g. redis://127.0.0.1:6379/0.",
)
@json_option
def info(config_path: str | None, url: str | None, as_json: bool) -> None:
    """Backend, schema version, counts and, for Redis, its durability settings.

    \b
    Example:
      edge store info --url redis://127.0.0.1:6379/0
    """
    settings = load(config_path)
    with _opened(url or settings.store.url, settings, must_exist=True) as store:
        facts = store_facts(store, time.time())
    if as_json:
        emit(camel_keys(facts))
        for warning in facts["warnings"]:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        return
    devices = facts["devices"]
    roles = ", ".join(f"{count} {role}" for role, count in devices["by_role"].items())
    lines = [
        f"backend:          {facts['backend']} (schema {facts['schema']})",
        f"store:            {facts['store']}",
        f"devices:          {devices['paired']} paired ({roles}), {devices['revoked']} revoked",
        f"pending requests: {facts['pending_requests']}",
        f"invites:          {facts['invites']['usable']} usable, "
        f"{facts['invites']['used_or_expired']} used or expired",
        f"event seq:        {facts['event_seq']}",
    ]
    if "redis" in facts:
        server = facts["redis"]
        lines.append(
            f"redis:            {server['version']} ({server['role']}), appendonly "
            f"{'yes' if server['appendonly'] else 'no'}, appendfsync {server['appendfsync']}, "
            f"maxmemory-policy {server['maxmemory_policy']}, "
            f"{server['event_log_length']} events kept"
        )
    click.echo("\n".join(lines))
    for warning in facts["warnings"]:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


@store_group.command("reset")
@config_option
@click.option("--yes", is_flag=True, help="Really start over: every paired device is forgotten.")
@json_option
def reset(config_path: str | None, yes: bool, as_json: bool) -> None:
    """Start over on an empty SQLite store; the old file is moved aside, not deleted.

    \b
    Example:
      edge store reset --yes
    """
    from edge.workers import live_worker_pids

    settings = load(config_path)
    path = sqlite_path_of(settings.store.url, settings.data_dir)
    if path is None:
        raise Refused(
            f"store.url {redact_url(settings.store.url or '')} is not a SQLite store; "
            "`edge store reset` only starts over on SQLite"
        )
    if live_worker_pids(settings):
        raise Refused("a gateway is running on this data_dir: stop edge serve first")
    if not yes:
        raise Refused(
            f"this forgets every paired device: the store at {path} is moved aside and the "
            "next start begins empty; run `edge store reset --yes` to do it"
        )
    moved = start_over(path)
    if as_json:
        emit({"movedAside": [str(p) for p in moved], "store": str(path)})
        return
    if moved:
        click.echo("moved aside: " + ", ".join(str(p) for p in moved))
    click.echo(f"the next `edge serve` starts on an empty store at {path}")


# -- migrate --------------------------------------------------------------------------------------


def snapshot_counts(snapshot: StoreSnapshot) -> dict[str, int]:
    """What ``describe_snapshot`` says, as numbers for ``--json``."""
    return {
        "devices": len(snapshot.devices),
        "paired": sum(d.status == PAIRED for d in snapshot.devices),
        "requests": len(snapshot.requests),
        "pending": sum(r.status == "pending" for r in snapshot.requests),
        "invites": len(snapshot.invites),
        "failureCounters": len(snapshot.failures),
        "eventSeq": snapshot.event_seq,
    }


def describe_snapshot(snapshot: StoreSnapshot) -> str:
    paired = sum(d.status == PAIRED for d in snapshot.devices)
    pending = sum(r.status == "pending" for r in snapshot.requests)
    return (
        f"{len(snapshot.devices)} devices ({paired} paired), {len(snapshot.requests)} pairing "
        f"requests ({pending} pending), {len(snapshot.invites)} invites, "
        f"{len(snapshot.failures)} failure counters, event seq {snapshot.event_seq}"
    )


@store_group.command("migrate")
@config_option
@click.option(
    "--from",
    "source_url",
    default=None,
    help="Store to copy from (default: store.url of the configuration).",
)
@click.option(
    "--to", "target_url", required=True, help="Store to copy into, e.g. redis://127.0.0.1:6379/0."
)
@click.option("--force", is_flag=True, help="Replace whatever the destination holds.")
@json_option
def migrate(
    config_path: str | None, source_url: str | None, target_url: str, force: bool, as_json: bool
) -> None:
    """Copy every device, request, invite and the event position to another store.

    Stop the gateways first; then point store.url at the destination.

    \b
    Example:
      edge store migrate --from sqlite:///var/lib/edge/edge.sqlite3 --to redis://127.0.0.1:6379/0
    """
    settings = load(config_path)
    source_url = source_url or settings.store.url
    with (
        _opened(source_url, settings, must_exist=True) as source,
        _opened(target_url, settings, must_exist=False) as target,
    ):
        if source.description == target.description:
            raise click.UsageError(f"--from and --to are the same store ({source.description})")
        snapshot = _snapshots(source).export_snapshot()
        held = _snapshots(target).export_snapshot()
        if not held.empty and not force:
            raise Refused(
                f"{target.description} is not empty ({describe_snapshot(held)}); "
                "add --force to replace its contents"
            )
        _snapshots(target).import_snapshot(snapshot, replace=force)
        copied = _snapshots(target).export_snapshot()
        if replace(copied, event_seq=snapshot.event_seq) != snapshot or (
            copied.event_seq < snapshot.event_seq
        ):
            raise Refused(
                f"{target.description} does not read back what was written "
                f"({describe_snapshot(copied)}); keep using {source.description}"
            )
        later = source.latest_seq()
        lines = [
            f"copied {describe_snapshot(snapshot)}",
            f"  from {source.description}",
            f"  to   {target.description}",
        ]
        document = {
            "copied": snapshot_counts(snapshot),
            "source": source.description,
            "destination": target.description,
            "sourceChanged": later != snapshot.event_seq,
            "next": f"set store.url to {_redacted(target_url)} and restart the gateways",
        }
    if as_json:
        emit(document)
    else:
        click.echo("\n".join(lines))
    if later != snapshot.event_seq:
        click.secho(
            f"warning: the source changed while it was copied (event seq {snapshot.event_seq} "
            f"-> {later}); stop the gateways and run again with --force",
            fg="yellow",
            err=True,
        )
    if not as_json:
        click.echo(f"next: {document['next']}")


def _redacted(url: str) -> str:
    """``url`` without its password, in the user part or in ``?password=``."""
    parts = urlsplit(redact_url(url))
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*/")))
