"""``edge serve`` and ``edge gateway reload``."""

from __future__ import annotations

import errno
import math
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edge.cli.common import (
    ConfigProblem,
    Refused,
    config_option,
    emit,
    json_option,
    load,
    local_url,
    note,
)
from edge.config import CONFIG_ENV, Settings
from edge.datadir import permission_problems
from edge.gateway_token import GatewayTokenError, load_gateway_token
from edge.logs import configure_process_logging, log_config
from edge.metrics import prepare_multiprocess_dir
from edge.pairing.store import SqliteStore, StoreError, redact_url, sqlite_path_of, start_over
from edge.peercred import peer_check_summary
from edge.running import ReloadAnswer, forget_gateway, read_answer, record_gateway
from edge.workers import live_worker_pids, run_dir

WS_MAX_SIZE = 1024 * 1024
# How uvicorn runs Edge; the benchmarks run their bare comparison apps with the same.
UVICORN_SETTINGS: dict[str, object] = {
    "proxy_headers": False,  # Edge resolves proxy headers itself, under its own trust rules
    "server_header": False,
    "access_log": False,
    "ws_max_size": WS_MAX_SIZE,
    # Control frames are small JSON: compression saves nothing worth its zlib state (about
    # 40 KiB per socket) and would compress attacker-chosen text beside device tokens.
    "ws_per_message_deflate": False,
    "ws_ping_interval": 20.0,
    "ws_ping_timeout": 20.0,
}


def banner_json(
    settings: Settings, host: str, port: int, token_source: str, token_path: Path | None
) -> dict[str, Any]:
    """What the banner says, as the one document ``edge serve --json`` prints."""
    metrics = settings.metrics
    metrics_url = None
    if metrics.enabled:
        metrics_url = (
            local_url(metrics.host, metrics.port, metrics.path)
            if metrics.port is not None
            else local_url(host, port, metrics.path)
        )
    return {
        "source": settings.source,
        "listening": f"http://{host}:{port}/",
        "workers": settings.server.workers,
        "dashboard": local_url(host, port),
        "publicUrl": settings.server.public_url,
        "token": {"source": token_source, "path": None if token_path is None else str(token_path)},
        "dataDir": str(settings.data_dir),
        "metrics": metrics_url,
        "trustedProxies": list(settings.proxy.trusted_proxies),
        "local": peer_check_summary(settings.local.peer_check),
    }


def check_port_free(host: str, port: int) -> None:
    """Exit 2 with one line when the gateway's address is taken, before anything is printed.

    uvicorn would find out only after the banner, and exit 1 with a log line;
    binding once here (as uvicorn will, with SO_REUSEADDR) and letting go says it
    first. Port 0 asks the kernel for any port: nothing to check.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigProblem(f"server.host: cannot resolve {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            hint = (
                "; is another gateway running? Choose another server.port or --port"
                if exc.errno == errno.EADDRINUSE
                else ""
            )
            raise ConfigProblem(
                f"server.port: cannot listen on {host}:{port} ({exc.strerror or exc}){hint}"
            ) from None


def _banner(
    settings: Settings, host: str, port: int, token_source: str, token_path: Path | None
) -> None:
    url = local_url(host, port)
    click.echo(f"Edge {settings.source or '(built-in defaults)'}")
    click.echo(f"  listening   http://{host}:{port}/ ({settings.server.workers} worker(s))")
    click.echo(f"  dashboard   {url}   (a browser on this machine is an admin)")
    if settings.server.public_url:
        click.echo(f"  public      {settings.server.public_url}   (invites and QR codes use it)")
    else:
        click.echo("  public      not set: set server.public_url for links other devices open")
    where = f"{token_path}" if token_path else token_source
    click.echo(f"  token       from {where}; show it with `edge token show`")
    click.echo(f"  data        {settings.data_dir}")
    metrics = settings.metrics
    if metrics.enabled:
        shown = (
            f"{local_url(metrics.host, metrics.port, metrics.path)} (a listener of its own)"
            if metrics.port is not None
            else local_url(host, port, metrics.path)
        )
        click.echo(f"  metrics     {shown}")
    if settings.proxy.trusted_proxies:
        click.echo(f"  proxies     trusting {', '.join(settings.proxy.trusted_proxies)}")
    else:
        click.echo("  proxies     none trusted: proxy headers are ignored (see `edge doctor`)")
    click.echo(f"  local       {peer_check_summary(settings.local.peer_check)}")


def refuse_untrusted_data_dir(settings: Settings) -> None:
    """Exit 2 when someone but the gateway's user could change what it trusts (one line each)."""
    problems = permission_problems(settings)
    if problems:
        raise ConfigProblem("\nedge: ".join(problem.line() for problem in problems))


def check_store_file(
    settings: Settings, *, new_store: bool, say: Callable[[str], None] = click.echo
) -> None:
    """Open the SQLite store once here, so a lost or damaged one stops start-up with one line.

    ``--new-store`` first moves the old file aside: starting empty is then a
    decision, never an accident.
    """
    path = sqlite_path_of(settings.store.url, settings.data_dir)
    if path is None:
        if new_store:
            raise ConfigProblem(
                "--new-store starts over on a SQLite store; this gateway uses store.url "
                f"{redact_url(settings.store.url or '')}: empty that store with its own tools"
            )
        return
    if new_store:
        moved = start_over(path)
        shown = ", ".join(str(p) for p in moved) or "nothing to move"
        say(f"starting over on an empty store at {path} (moved aside: {shown})")
    try:
        SqliteStore(path).close()
    except StoreError as exc:
        raise ConfigProblem(str(exc)) from None


@click.command("serve")
@config_option
@click.option("--host", default=None, help="Bind address (overrides server.host), e.g. 0.0.0.0.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (overrides server.port)."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes (overrides server.workers).",
)
@click.option(
    "--new-store",
    is_flag=True,
    help="Start over on an empty SQLite store: the old file is moved aside, not deleted.",
)
@json_option
def serve(
    config_path: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    new_store: bool,
    as_json: bool,
) -> None:
    """Run the gateway (uvicorn). Ctrl-C or SIGTERM stops it gracefully.

    With --json the banner is one JSON document on stdout; the log goes to stderr.

    \b
    Example:
      edge serve -c /etc/edge/edge.yaml
      edge serve --host 127.0.0.1 --port 18789 --workers 4
    """
    import uvicorn

    # The ASGI layer is loaded by the one command that runs it: the management
    # commands (devices, store, pair...) reach the store without it.
    from edge.gateway.metrics_endpoint import bind_listener, serve_listener

    settings = load(config_path, discover=False)
    updates = {
        k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None
    }
    if updates:
        server = settings.server.model_copy(update=updates)
        settings = settings.model_copy(update={"server": server})
    # Before anything is logged: with format json, stderr is JSON from its first line.
    configure_process_logging(settings.logging)
    check_port_free(settings.server.host, settings.server.port)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigProblem(
            f"data_dir: cannot create {settings.data_dir} ({exc.strerror})"
        ) from None
    refuse_untrusted_data_dir(settings)
    check_store_file(settings, new_store=new_store, say=note if as_json else click.echo)
    try:
        token = load_gateway_token(settings, create=True)
    except GatewayTokenError as exc:
        raise ConfigProblem(str(exc)) from None
    if settings.source:
        # Absolute for the workers, symlinks kept: a reload reads a swapped ConfigMap's new file.
        os.environ[CONFIG_ENV] = str(Path(settings.source).absolute())
    else:
        os.environ.pop(CONFIG_ENV, None)
    listener = settings.metrics.enabled and settings.metrics.port is not None
    if listener and settings.metrics.port == settings.server.port:
        raise ConfigProblem(
            f"metrics.port: {settings.metrics.port} is also the gateway's port; "
            "the metrics listener needs a port of its own"
        )
    if settings.server.workers > 1 or listener:
        # The dedicated listener runs in this process, outside the workers: it reads
        # what every worker writes there, even when there is only one.
        prepare_multiprocess_dir(settings.data_dir / "metrics")
    if listener:
        try:
            sock = bind_listener(settings)
        except OSError as exc:
            raise ConfigProblem(
                f"metrics.port: cannot listen on {settings.metrics.host}:{settings.metrics.port} "
                f"({exc.strerror or exc})"
            ) from None
        serve_listener(
            settings, sock, {**UVICORN_SETTINGS, "log_config": log_config(settings.logging)}
        )
    if as_json:
        emit(
            banner_json(
                settings, settings.server.host, settings.server.port, token.source, token.path
            )
        )
    else:
        _banner(settings, settings.server.host, settings.server.port, token.source, token.path)
    record = record_gateway(
        settings.source, settings.data_dir, local_url(settings.server.host, settings.server.port)
    )
    try:
        _run(uvicorn, settings)
    finally:
        forget_gateway(record)


def _run(uvicorn: Any, settings: Settings) -> None:
    from edge.gateway.protocols import HTTP_PROTOCOL, WS_PROTOCOL

    uvicorn.run(
        "edge.app:app_from_env",
        factory=True,
        host=settings.server.host,
        port=settings.server.port,
        workers=settings.server.workers,
        log_level=settings.logging.level,
        # uvicorn applies it in this process and in each worker, instead of its defaults.
        log_config=log_config(settings.logging),
        timeout_graceful_shutdown=math.ceil(settings.server.graceful_timeout),
        # Each connection's owner is asked of the kernel once, as it opens, and its request
        # heads are bounded in size, time and connections per address (edge.gateway.protocols).
        http=HTTP_PROTOCOL,
        ws=WS_PROTOCOL,
        **UVICORN_SETTINGS,
    )


@click.group("gateway")
def gateway_group() -> None:
    """Control a running gateway.

    \b
    Example:
      edge gateway reload
    """


@gateway_group.command("reload")
@config_option
@json_option
def reload(config_path: str | None, as_json: bool) -> None:
    """Re-read trusted proxies, origins and the token in every worker, keeping sockets (SIGHUP).

    Each worker's own answer is printed: what changed, or why it refused (then exit 1).

    \b
    Example:
      edge token rotate --yes && edge gateway reload -c /etc/edge/edge.yaml
    """
    settings = load(config_path)
    pids = live_worker_pids(settings)
    if not pids:
        raise Refused(f"no running gateway found (no worker registered in {run_dir(settings)})")
    before = {pid: read_answer(settings.data_dir, pid) for pid in pids}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGHUP)
        except PermissionError:
            raise Refused(f"not allowed to signal pid {pid}; run as the gateway's user") from None
    answers = _wait_for_answers(settings.data_dir, before)
    say = note if as_json else click.echo
    say(f"sent SIGHUP to {len(pids)} worker(s): {', '.join(map(str, pids))}")
    problems = []
    for pid in pids:
        answer = answers.get(pid)
        if answer is None:
            problems.append(f"worker {pid} did not answer within {RELOAD_WAIT:.0f} s")
        elif not answer.ok:
            problems.append(f"worker {pid} refused: {answer.error}")
        else:
            changed = ", ".join(answer.changed) or "nothing"
            say(f"worker {pid}: reloaded {answer.source} (changed: {changed})")
    if as_json:
        emit(
            {
                "signalled": list(pids),
                "answers": [
                    {
                        "pid": pid,
                        "ok": answer.ok,
                        "changed": answer.changed,
                        "error": answer.error,
                        "source": answer.source,
                    }
                    for pid, answer in sorted(answers.items())
                ],
            }
        )
    if problems:
        raise Refused("; ".join(problems))


RELOAD_WAIT = 10.0  # seconds a worker has to answer a reload


def _wait_for_answers(
    data_dir: Path, before: dict[int, ReloadAnswer | None]
) -> dict[int, ReloadAnswer]:
    """Each worker's answer to this SIGHUP: a newer sequence number than before it."""
    deadline = time.monotonic() + RELOAD_WAIT
    answers: dict[int, ReloadAnswer] = {}
    while True:
        for pid, old in before.items():
            answer = read_answer(data_dir, pid)
            if answer is not None and (old is None or answer.seq > old.seq):
                answers[pid] = answer
        if len(answers) == len(before) or time.monotonic() > deadline:
            return answers
        time.sleep(0.05)
