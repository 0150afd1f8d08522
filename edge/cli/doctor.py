"""``edge doctor``: check a deployment and say what to fix, finding by finding."""

from __future__ import annotations

import ipaddress
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from edge.causes import UNTRUSTED_PROXY
from edge.cli.common import EXIT_REFUSED, config_option, emit, json_option, load
from edge.config import ConfigError, Settings
from edge.datadir import permission_problems
from edge.diagnostics import describe_forwarded, read_forwarded, read_refusals
from edge.gateway_token import (
    GatewayTokenError,
    generated_token_path,
    load_gateway_token,
    rotate_gateway_token,
)
from edge.hostcheck import running_reverse_proxies, same_host_proxy_advice
from edge.pairing.service import PairingService
from edge.pairing.store import StoreError, marker_path, open_store, sqlite_path_of
from edge.pairing.store.sqlite import SCHEMA_VERSION
from edge.pairing.tokens import generate_secret
from edge.peercred import peer_check_summary, self_test
from edge.refusals import Denial


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warn", "error"
    check: str
    message: str
    fix: str = ""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_files(settings: Settings) -> list[Finding]:
    findings = []
    data_dir = settings.data_dir
    if not data_dir.exists():
        findings.append(
            Finding("ok", "data_dir", f"{data_dir} will be created (0700) on first start")
        )
    elif _mode(data_dir) & 0o077:
        findings.append(
            Finding(
                "warn",
                "data_dir",
                f"{data_dir} is readable by other users (mode {_mode(data_dir):o})",
                f"chmod 700 {data_dir}",
            )
        )
    else:
        findings.append(Finding("ok", "data_dir", f"{data_dir} is private (0700)"))
    for path in (settings.auth.token_file, generated_token_path(settings)):
        if path is not None and path.exists() and _mode(path) & 0o077:
            findings.append(
                Finding(
                    "error",
                    "token file",
                    f"{path} is readable by other users (mode {_mode(path):o})",
                    f"chmod 600 {path}",
                )
            )
    return findings


def check_permissions(settings: Settings) -> list[Finding]:
    """What ``edge serve`` would refuse to start on: secrets others could change (read only)."""
    problems = permission_problems(settings)
    if not problems:
        return [
            Finding("ok", "permissions", f"{settings.data_dir} and its secrets are edge's alone")
        ]
    return [
        Finding(
            "error",
            "permissions",
            f"{p.what} {p.path} {p.problem}: edge serve refuses to start",
            p.fix,
        )
        for p in problems
    ]


def check_token(settings: Settings, generate: bool) -> list[Finding]:
    try:
        token = load_gateway_token(settings, create=False)
    except GatewayTokenError:
        if generate:
            created = rotate_gateway_token(settings)
            return [
                Finding("ok", "gateway token", f"generated a new gateway token in {created.path}")
            ]
        level = "ok" if settings.server.binds_loopback else "error"
        fix = "run `edge doctor --generate-gateway-token` (or `edge token generate`)"
        if settings.auth.token_file is not None:
            return [
                Finding(
                    "error",
                    "gateway token",
                    f"auth.token_file {settings.auth.token_file} is missing or unusable: the "
                    "gateway will refuse to start",
                    "run `edge token generate` to create it",
                )
            ]
        if level == "ok":
            return [Finding("ok", "gateway token", "none yet; the first start generates one", "")]
        return [
            Finding(
                "error",
                "gateway token",
                f"server.host {settings.server.host!r} is reachable from other machines and no "
                "gateway token exists: the gateway will refuse to start",
                fix,
            )
        ]
    return [Finding("ok", "gateway token", f"present (from {token.source})")]


# Where SQLite keeps the database's user_version (Edge's schema) in the file's header.
_USER_VERSION_OFFSET = 60


def sqlite_schema_on_disk(path: Path) -> int | None:
    """The schema version in ``path``'s header, read without SQLite (None: unreadable).

    Only the header is read: opening the database would bring its journal files and,
    on an older schema, the upgrade ``edge serve`` makes, while the doctor only looks.
    """
    try:
        with path.open("rb") as file:
            header = file.read(_USER_VERSION_OFFSET + 4)
    except OSError:
        return None
    if len(header) < _USER_VERSION_OFFSET + 4 or not header.startswith(b"SQLite format 3\0"):
        return None
    return int.from_bytes(header[_USER_VERSION_OFFSET:], "big")


def sqlite_would_change(path: Path) -> str | None:
    """What opening the SQLite store at ``path`` would write, or None when only reading.

    A write-ahead log that is not empty may hold a newer header than the file's
    (a gateway is running on it): the header is then no guide, and opening it is
    what the running gateway has already done.
    """
    wal = path.with_name(f"{path.name}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return None
    version = sqlite_schema_on_disk(path)
    if version is not None and version < SCHEMA_VERSION:
        return f"its schema is {version}; the next `edge serve` upgrades it to {SCHEMA_VERSION}"
    if not marker_path(path).exists():
        return f"the next `edge serve` marks it as Edge's store ({marker_path(path).name})"
    return None


def check_store(settings: Settings) -> list[Finding]:
    path = sqlite_path_of(settings.store.url, settings.data_dir)
    if path is not None and not path.exists():
        # Opening it would create it: the doctor looks, it does not make or fix anything.
        if marker_path(path).exists():
            return [
                Finding(
                    "error",
                    "store",
                    f"SQLite store {path} is missing, but {marker_path(path)} shows it held "
                    "Edge's devices before: edge serve refuses to start on an empty store",
                    "restore the file from a backup, or start over on purpose with "
                    "`edge store reset --yes`",
                )
            ]
        return [Finding("ok", "store", f"SQLite store {path} will be created on first start")]
    if path is not None and path.is_file():
        change = sqlite_would_change(path)
        if change is not None:
            return [Finding("ok", "store", f"SQLite store {path} is not read here: {change}")]
    try:
        store = open_store(settings.store.url, settings.data_dir)
    except StoreError as exc:
        return [Finding("error", "store", str(exc), "fix store.url or the file named above")]
    except OSError as exc:
        return [
            Finding("error", "store", f"cannot open the store: {exc}", "check data_dir permissions")
        ]
    description = store.description
    try:
        service = PairingService(store, generate_secret())
        pending = service.list_requests()
        devices = service.list_devices()
    except Exception as exc:
        return [
            Finding(
                "error",
                "store",
                f"store unreadable: {exc}",
                "restore it from a backup or move it aside",
            )
        ]
    finally:
        store.close()
    findings = [Finding("ok", "store", f"{description}: {len(devices)} device(s)")]
    if pending:
        findings.append(
            Finding(
                "warn",
                "pairing",
                f"{len(pending)} request(s) waiting for approval",
                f"review with `edge devices list`, then `edge devices approve {pending[-1].id}`",
            )
        )
    return findings


def check_proxy(settings: Settings) -> list[Finding]:
    findings = []
    trusted = settings.proxy.trusted_proxies
    nets = []
    for entry in trusted:
        if entry.lower() == "unix":
            continue
        nets.append(ipaddress.ip_network(entry, strict=False))
    for net in nets:
        if (net.version == 4 and net.prefixlen < 8) or (net.version == 6 and net.prefixlen < 32):
            findings.append(
                Finding(
                    "warn",
                    "proxy.trusted_proxies",
                    f"{net} is very broad: any client inside it can forge its address",
                    "list only your reverse proxies' addresses",
                )
            )
    proxies = running_reverse_proxies()
    loopback_trusted = any(net.network_address.is_loopback for net in nets)
    if proxies and not trusted:
        findings.append(
            Finding(
                "warn",
                "proxy.trusted_proxies",
                f"{', '.join(proxies)} is running on this host but proxy.trusted_proxies is empty: "
                "requests through it are attributed to the proxy's address and are never local "
                "(Edge fails closed), and the real client address is lost",
                "if it proxies to Edge, add its address (usually 127.0.0.1 and ::1) to "
                "proxy.trusted_proxies, then check with `edge explain`",
            )
        )
    forwarded = read_forwarded(settings.data_dir)
    if proxies and trusted and settings.local.loopback and settings.local.peer_check == "address":
        if forwarded is not None:
            findings.append(
                Finding(
                    "ok",
                    "local.loopback",
                    f"{', '.join(proxies)} runs on this host, and {describe_forwarded(forwarded)}:"
                    " it forwards as it should",
                )
            )
        else:
            findings.append(
                Finding(
                    "warn",
                    "local.loopback",
                    same_host_proxy_advice(proxies),
                    "check with `edge explain --peer 127.0.0.1 -H 'Host: 127.0.0.1:18789'`, or "
                    "`edge doctor --probe <public URL>` through the proxy; a proxy that forwards "
                    "no header must not reach Edge, or set local.loopback: false",
                )
            )
    if loopback_trusted and not settings.server.binds_loopback:
        findings.append(
            Finding(
                "warn",
                "server.host",
                f"Edge binds {settings.server.host} while its proxy is on loopback: clients can "
                "bypass the proxy and reach Edge directly",
                "bind server.host to 127.0.0.1 (or ::1) when the proxy runs on the same host",
            )
        )
    for entry in settings.local.networks:
        net = ipaddress.ip_network(entry, strict=False)
        if net.is_global:
            findings.append(
                Finding(
                    "warn",
                    "local.networks",
                    f"{net} is a public network: its clients skip pairing",
                    "keep local.networks to private ranges you control",
                )
            )
    if not any(f.check.startswith("proxy") for f in findings):
        findings.append(Finding("ok", "proxy", f"trusted proxies: {', '.join(trusted) or 'none'}"))
    return findings


# The refusals every pairing goes through: worth counting, not worth a warning.
EVERYDAY_REFUSALS = frozenset(
    {Denial.PAIRING_REQUIRED.metric_label, Denial.GATEWAY_TOKEN_MISSING.metric_label}
)


def check_refusals(settings: Settings) -> list[Finding]:
    """What the running gateway refused lately, by reason, each with what fixes it.

    A refusal that came with proxy headers from an untrusted peer is the
    proxy's fault whatever its reason says, so it is named as such.
    """
    counts, recent = read_refusals(settings.data_dir)
    if not counts:
        return []
    findings = []
    untrusted = [entry for entry in recent if entry.anomaly == UNTRUSTED_PROXY.anomaly]
    if untrusted:
        peer = untrusted[-1].peer
        shown = UNTRUSTED_PROXY.fix_for(peer).split("trusted_proxies: ", 1)[1]
        fix = f"proxy.trusted_proxies: {shown}"
        findings.append(
            Finding(
                "error",
                "refusals",
                f"{len(untrusted)} recent refusal(s) came through a proxy at "
                f"{peer or 'a unix socket'} that is not in proxy.trusted_proxies: its headers "
                "were ignored, so pages through it are refused (as origin_not_allowed and the "
                "like)",
                f"set `{fix}` in the configuration file, then run `{UNTRUSTED_PROXY.then}`",
            )
        )
    by_code = {denial.metric_label: denial for denial in Denial}
    for reason, count in counts.most_common():
        denial = by_code.get(reason)
        findings.append(
            Finding(
                "ok" if reason in EVERYDAY_REFUSALS else "warn",
                "refusals",
                f"{reason}: {count} since the gateway started",
                denial.next_step if denial is not None else "",
            )
        )
    return findings


def check_peer_check(settings: Settings) -> list[Finding]:
    """Which rule makes a loopback client local, and whether the owner lookup works here."""
    local = settings.local
    if not local.loopback:
        return [
            Finding("ok", "local.peer_check", "local.loopback is off: no loopback client is local")
        ]
    if local.peer_check == "address":
        return [
            Finding(
                "warn",
                "local.peer_check",
                peer_check_summary("address").removeprefix("local.peer_check: "),
                "set local.peer_check: uid (the default) unless the owner lookup cannot work here",
            )
        ]
    if self_test().verdict == "unknown":
        return [
            Finding(
                "warn",
                "local.peer_check",
                peer_check_summary("uid").removeprefix("local.peer_check: "),
                "approve this host's browser with `edge devices approve`, or set "
                "local.peer_check: address (weaker)",
            )
        ]
    return [
        Finding(
            "ok", "local.peer_check", peer_check_summary("uid").removeprefix("local.peer_check: ")
        )
    ]


def check_upstreams(settings: Settings) -> list[Finding]:
    """Name each upstream on the dashboard's origin for what it is: trusted like an admin."""
    return [
        Finding(
            "warn",
            f"upstreams[{index}].share_control_origin",
            f"upstream {upstream.label!r} ({upstream.path_prefix}) is served on the dashboard's "
            "own origin: its pages' scripts can do whatever an admin who opens the dashboard "
            "can: it is trusted like an admin"
            + ("" if upstream.sandbox else " (and sandbox: false lets its pages keep that origin)"),
            "give it a host of its own (upstreams[].host) unless you trust the app like an admin",
        )
        for index, upstream in enumerate(settings.upstreams)
        if upstream.share_control_origin
    ]


PROBE_TIMEOUT = 10.0


def _probe_answer(url: str, nonce: str, ca_file: str | None) -> tuple[int, object]:
    """GET ``url``/api/whoami?probe=``nonce`` with aiohttp, as a browser would reach it."""
    import asyncio
    import ssl

    import aiohttp

    context = ssl.create_default_context(cafile=ca_file)  # the system's CAs without --ca-file
    target = f"{url.rstrip('/')}/api/whoami?probe={nonce}"

    async def fetch() -> tuple[int, object]:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(target, ssl=context, allow_redirects=False) as response,
        ):
            try:
                body: object = await response.json(content_type=None)
            except ValueError:
                body = None
            return response.status, body

    return asyncio.run(fetch())


def check_probe(url: str, ca_file: str | None) -> list[Finding]:
    """Send one request through the proxy at ``url`` and read what Edge made of it.

    The nonce comes back only from Edge's own whoami, answering this request:
    a cached page or another server behind the proxy cannot echo it.
    """
    import secrets
    import ssl
    from urllib.parse import urlsplit

    import aiohttp

    nonce = secrets.token_urlsafe(12)
    try:
        status, body = _probe_answer(url, nonce, ca_file)
    except (aiohttp.ClientConnectorCertificateError, ssl.SSLError) as exc:
        return [
            Finding(
                "error",
                "probe",
                f"{url}: the TLS certificate was refused ({exc})",
                "if a private CA signed it, pass it with `--ca-file ca.pem`",
            )
        ]
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return [
            Finding(
                "error",
                "probe",
                f"{url}: no answer ({exc or type(exc).__name__})",
                "check the URL, that the proxy runs and that it listens there",
            )
        ]
    if status != 200 or not isinstance(body, dict) or body.get("probe") != nonce:
        return [
            Finding(
                "error",
                "probe",
                f"{url}/api/whoami answered HTTP {status} without this probe's nonce: the proxy "
                "does not pass this URL to Edge (or a cache answered)",
                "point the proxy's location / at Edge (see deploy/ and docs/reverse-proxies.md)",
            )
        ]
    peer = (body.get("peer") or {}).get("ip")
    anomalies = list(body.get("anomalies") or [])
    header = body.get("headerUsed")
    client = (body.get("client") or {}).get("ip")
    seen = f"{body.get('scheme')}://{body.get('host')}"
    if UNTRUSTED_PROXY.anomaly in anomalies:
        fix = UNTRUSTED_PROXY.fix_for(peer).split("trusted_proxies: ", 1)[1]
        return [
            Finding(
                "error",
                "probe",
                f"the proxy at {peer} forwarded the request with its headers, but {peer} is not "
                "in proxy.trusted_proxies: Edge ignored them, took the client for "
                f"{client} and the page for {seen}",
                f"set `proxy.trusted_proxies: {fix}`, then run `{UNTRUSTED_PROXY.then}`",
            )
        ]
    findings = []
    if not body.get("trustedPeer") or header is None:
        findings.append(
            Finding(
                "warn",
                "probe",
                f"the request reached Edge from {peer} without a forwarding header Edge reads: "
                "no proxy in between, or one that forwards no X-Forwarded-For/Forwarded",
                "make the proxy set X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host "
                "(the files in deploy/ do)",
            )
        )
    else:
        findings.append(
            Finding(
                "ok",
                "probe",
                f"the proxy at {peer} forwarded the request with {header}; Edge resolved the "
                f"client {client} and the page {seen}",
            )
        )
    opened = urlsplit(url)
    if body.get("scheme") != opened.scheme or body.get("host") != opened.netloc:
        findings.append(
            Finding(
                "warn",
                "probe",
                f"you opened {opened.scheme}://{opened.netloc} but Edge resolved {seen}: "
                "its pages there would be refused as another origin",
                "make the proxy pass Host and X-Forwarded-Host ($http_host) and X-Forwarded-Proto",
            )
        )
    if body.get("local"):
        findings.append(
            Finding(
                "error",
                "probe",
                "the probe counted as a local client: every visitor through this proxy would be "
                "an admin without pairing",
                "make the proxy send X-Forwarded-For and trust it in proxy.trusted_proxies, or "
                "set local.loopback: false",
            )
        )
    return findings


@click.command("doctor")
@config_option
@click.option(
    "--generate-gateway-token",
    "generate",
    is_flag=True,
    help="Create the gateway token if missing (the one thing the doctor may write).",
)
@click.option(
    "--probe",
    "probe_url",
    metavar="URL",
    default=None,
    help="Also send a request through the proxy at URL (the public address) and check what "
    "reaches Edge, e.g. https://edge.example.com.",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA certificate(s) to verify the --probe URL's TLS with (a private CA).",
)
@json_option
def doctor(
    config_path: str | None,
    generate: bool,
    probe_url: str | None,
    ca_file: str | None,
    as_json: bool,
) -> None:
    """Check configuration, store, permissions and proxy sanity; each finding says what to do.

    The doctor only looks: it creates no data_dir, store or token file (unless
    --generate-gateway-token says so). Exit 1 when a finding is an error.

    \b
    Example:
      edge doctor -c /etc/edge/edge.yaml
      edge doctor --probe https://edge.example.com
      edge doctor --json | jq '.[] | select(.level != "ok")'
    """
    try:
        settings = load(config_path)
    except ConfigError:
        raise
    findings = [Finding("ok", "config", f"valid ({settings.source or 'built-in defaults'})")]
    if probe_url is not None:
        findings += check_probe(probe_url, ca_file)
    findings += check_files(settings)
    findings += check_permissions(settings)
    findings += check_token(settings, generate)
    findings += check_store(settings)
    findings += check_proxy(settings)
    findings += check_refusals(settings)
    findings += check_peer_check(settings)
    findings += check_upstreams(settings)
    if as_json:
        emit([asdict(f) for f in findings])
    else:
        colours = {"ok": "green", "warn": "yellow", "error": "red"}
        for f in findings:
            click.secho(f"[{f.level:^5}] ", fg=colours[f.level], nl=False)
            click.echo(f"{f.check}: {f.message}")
            if f.fix:
                click.echo(f"        fix: {f.fix}")
    if any(f.level == "error" for f in findings):
        raise click.exceptions.Exit(EXIT_REFUSED)
