"""``edge pair`` (a command-line device) and ``edge dashboard``."""

from __future__ import annotations

import json
import os
import ssl
import time
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console

from edge.cli.common import Refused, config_option, emit, json_option, load, local_url
from edge.pairing.identity import DeviceKey
from edge.pairing.tokens import write_private_file
from edge.refusals import Denial

PAIR_DIR_ENV = "EDGE_PAIR_DIR"
RETRY_SECONDS = 2.0
_DENIALS = {d.reason: d for d in Denial}


def pair_dir() -> Path:
    if os.environ.get(PAIR_DIR_ENV):
        return Path(os.environ[PAIR_DIR_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edge"


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise click.BadParameter(
            f"{url!r} is not an http(s):// URL of a gateway", param_hint="--url"
        )
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}/ws"


@dataclass
class Attempt:
    hello: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    close_code: int | None = None
    close_reason: str = ""
    forgotten: bool = False  # the gateway revoked this device at its own request


def tls_context(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """The TLS settings for ``url``: the system's CAs, plus ``--ca-file`` (a private CA)."""
    if urlsplit(url).scheme not in ("https", "wss"):
        return None
    return ssl.create_default_context(cafile=ca_file)


def _unreachable(url: str, exc: BaseException, ca_file: str | None) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = (
            "is it signed by the CA in --ca-file?"
            if ca_file
            else "if a private CA signed it, pass the CA with --ca-file ca.pem"
        )
        return (
            f"cannot reach {url}: its TLS certificate is not trusted ({exc.verify_message}); {hint}"
        )
    return f"cannot reach {url}: {exc}"


def connect_once(
    url: str,
    key: DeviceKey,
    auth: dict[str, str],
    name: str,
    role: str,
    timeout: float = 10.0,
    *,
    ca_file: str | None = None,
    forget: bool = False,
) -> Attempt:
    """One handshake against ``url``; returns hello, or the error frame and close reason.

    With ``forget``, the device then asks the gateway to revoke it (``self.forget``).
    """
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    attempt = Attempt()
    try:
        with connect(
            _ws_url(url),
            open_timeout=timeout,
            close_timeout=2,
            max_size=1 << 20,
            ssl=tls_context(url, ca_file),
        ) as ws:
            challenge = json.loads(ws.recv(timeout=timeout))
            nonce = str(challenge.get("nonce", ""))
            frame = {
                "type": "connect",
                "auth": auth,
                "device": key.device_field(nonce, role),
                "client": {"name": name, "app": "edge-cli", "version": "1"},
                "role": role,
            }
            ws.send(json.dumps(frame))
            while True:
                message = json.loads(ws.recv(timeout=timeout))
                if message.get("type") == "hello":
                    attempt.hello = message
                    if not forget:
                        return attempt
                    ws.send(
                        json.dumps({"type": "req", "id": 1, "method": "self.forget", "params": {}})
                    )
                if message.get("type") == "res":
                    attempt.forgotten = bool(message.get("ok"))
                    return attempt
                if message.get("type") == "error":
                    attempt.error = message
    except ConnectionClosed as exc:
        if exc.rcvd is not None:
            attempt.close_code = exc.rcvd.code
            attempt.close_reason = exc.rcvd.reason
        else:
            attempt.close_code = 1006
    except (OSError, TimeoutError) as exc:
        attempt.close_code = 1006
        attempt.close_reason = _unreachable(url, exc, ca_file)
    return attempt


def _state_path(directory: Path) -> Path:
    return directory / "device.json"


def _load_state(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(directory).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(directory: Path, state: dict[str, Any]) -> None:
    write_private_file(_state_path(directory), json.dumps(state, indent=2).encode("utf-8"))


def _load_key(directory: Path) -> DeviceKey:
    path = directory / "device.key"
    if path.exists():
        return DeviceKey.load(path)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = DeviceKey.generate()
    key.save(path)
    return key


def _explain_close(attempt: Attempt) -> str:
    denial = _DENIALS.get(attempt.close_reason)
    if denial is not None:
        return f"{denial.reason} — {denial.next_step}"
    return attempt.close_reason or f"connection closed ({attempt.close_code})"


@click.command("pair")
@click.option("--url", default=None, help="Gateway URL, e.g. https://edge.example.com.")
@click.option(
    "--token",
    default=None,
    envvar="EDGE_GATEWAY_TOKEN",
    show_envvar=True,
    help="The gateway token (what `edge token show` prints on the gateway host).",
)
@click.option("--invite", default=None, help="An invite code (pairs at once, no approval needed).")
@click.option("--name", default=None, help="Device name shown to the operator, e.g. ci-runner.")
@click.option(
    "--role",
    type=click.Choice(["user", "admin"]),
    default="user",
    show_default=True,
    help="Role to ask for.",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 86400),
    default=600,
    show_default=True,
    help="Seconds to wait for approval.",
)
@click.option("--status", is_flag=True, help="Report whether this machine is paired, and check it.")
@click.option(
    "--logout",
    is_flag=True,
    help="Unpair: ask the gateway to revoke this device, then delete its key and token here.",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA certificate(s) to verify an https:// gateway with (a private CA).",
)
@json_option
def pair(
    url: str | None,
    token: str | None,
    invite: str | None,
    name: str | None,
    role: str,
    wait: float,
    status: bool,
    logout: bool,
    ca_file: str | None,
    as_json: bool,
) -> None:
    """Pair this machine as a device (key kept 0600 in ~/.config/edge/), wait for approval.

    The key and device token live in $EDGE_PAIR_DIR when it is set.

    \b
    Example:
      edge pair --url https://edge.example.com --token "$EDGE_GATEWAY_TOKEN" --name ci-runner
      edge pair --url https://edge.example.com --invite 7Q2M-K9FD-X3PA
      edge pair --status
      edge pair --logout
    """
    directory = pair_dir()
    state = _load_state(directory)
    console = Console(stderr=True)
    if status:
        _status(directory, state, url, as_json, ca_file)
        return
    if logout:
        _logout(directory, state, url, as_json, ca_file)
        return
    if url is None:
        raise click.UsageError("--url is required")
    key = _load_key(directory)
    device_name = (
        name or state.get("name") or f"{os.environ.get('USER', 'cli')}@{os.uname().nodename}"
    )
    if state.get("deviceToken") and state.get("url") == url and not invite:
        # the stored device token first; --token is the fallback if it was revoked/rotated
        auth = {"deviceToken": str(state["deviceToken"])}
    elif invite:
        auth = {"invite": invite}
    elif token:
        auth = {"token": token}
    else:
        raise click.UsageError("give --token (the gateway token) or --invite")
    deadline = time.monotonic() + wait
    shown: str | None = None
    with console.status("connecting...") as spinner:
        while True:
            attempt = connect_once(url, key, auth, device_name, role, ca_file=ca_file)
            if attempt.hello is not None:
                break
            if attempt.error and attempt.error.get("code") == "PAIRING_DECLINED":
                raise Refused(
                    f"request {attempt.error.get('requestId')} was declined by the operator; "
                    f"this device may ask again in {attempt.error.get('retryAfter')} s"
                )
            if attempt.error and attempt.error.get("code") == "PAIRING_REQUIRED":
                request_id = attempt.error.get("requestId")
                if request_id and request_id != shown:
                    shown = request_id
                    console.print(
                        f"Pairing request [bold]{request_id}[/bold] is waiting for an operator."
                    )
                    console.print(
                        f"Approve it on the gateway host with:  edge devices approve {request_id}"
                    )
                elif not request_id:
                    raise Refused(
                        f"pairing required but not queued: {attempt.error.get('detail', '')}"
                    )
                spinner.update(f"waiting for approval of {request_id} ...")
                if time.monotonic() >= deadline:
                    raise Refused(
                        f"not approved within {int(wait)}s; request {request_id} stays pending"
                    )
                time.sleep(RETRY_SECONDS)
                continue
            if (
                auth.get("deviceToken")
                and attempt.close_reason == Denial.DEVICE_TOKEN_INVALID.reason
                and token
            ):
                auth = {"token": token}
                continue
            raise Refused(_explain_close(attempt))
    hello = attempt.hello
    device = hello.get("device", {})
    _save_state(
        directory,
        {
            "url": url,
            "deviceId": key.device_id,
            "name": device.get("name", device_name),
            "role": device.get("role", role),
            "deviceToken": hello.get("deviceToken"),
            "pairedAt": int(time.time()),
        },
    )
    if as_json:
        emit(
            {
                "paired": True,
                "url": url,
                "device": {
                    "id": key.device_id,
                    "name": device.get("name"),
                    "role": device.get("role"),
                },
                "stateFile": str(_state_path(directory)),
            }
        )
        return
    click.echo(
        f"paired as {device.get('name')!r} ({key.device_id[:12]}) with role {device.get('role')}"
    )
    click.echo(f"device token stored in {_state_path(directory)} (0600)")


def _logout(
    directory: Path, state: dict[str, Any], url: str | None, as_json: bool, ca_file: str | None
) -> None:
    """Revoke this device on the gateway if it can be reached, then forget it here in any case.

    The local files go even when the gateway cannot be reached: a person who
    logs out means this machine to hold no credential any more; the gateway
    then still lists the device, and the message says how to revoke it there.
    """
    if not state.get("deviceToken"):
        raise Refused(f"this machine is not paired (no device token in {_state_path(directory)})")
    target = url or str(state.get("url"))
    key_path = directory / "device.key"
    attempt = Attempt()
    if key_path.exists():
        attempt = connect_once(
            target,
            DeviceKey.load(key_path),
            {"deviceToken": str(state["deviceToken"])},
            str(state.get("name", "")),
            str(state.get("role", "user")),
            ca_file=ca_file,
            forget=True,
        )
    revoked = attempt.forgotten or attempt.close_reason == Denial.DEVICE_REVOKED.reason
    for path in (_state_path(directory), key_path):
        path.unlink(missing_ok=True)
    device_id = str(state.get("deviceId", ""))
    if as_json:
        emit({"loggedOut": True, "url": target, "revoked": revoked, "deviceId": device_id})
        return
    click.echo(f"deleted this machine's device key and token from {directory}")
    if revoked:
        click.echo(f"{target} revoked device {device_id[:12]}")
    else:
        click.echo(
            f"{target} could not revoke it ({_explain_close(attempt)}); on the gateway host: "
            f"edge devices revoke {device_id}"
        )


def _status(
    directory: Path, state: dict[str, Any], url: str | None, as_json: bool, ca_file: str | None
) -> None:
    if not state.get("deviceToken"):
        raise Refused(f"this machine is not paired (no device token in {_state_path(directory)})")
    target = url or str(state.get("url"))
    key = _load_key(directory)
    attempt = connect_once(
        target,
        key,
        {"deviceToken": str(state["deviceToken"])},
        str(state.get("name", "")),
        str(state.get("role", "user")),
        ca_file=ca_file,
    )
    if attempt.hello is None:
        raise Refused(
            f"paired with {target} as {state.get('role')}, "
            f"but the gateway refused: {_explain_close(attempt)}"
        )
    if as_json:
        emit(
            {
                "paired": True,
                "url": target,
                "device": {
                    "id": key.device_id,
                    "name": state.get("name"),
                    "role": attempt.hello["device"]["role"],
                },
                "stateFile": str(_state_path(directory)),
            }
        )
        return
    click.echo(
        f"paired with {target} as {state.get('name')!r} ({key.device_id[:12]}), "
        f"role {attempt.hello['device']['role']}: OK"
    )


@click.command("dashboard")
@config_option
@click.option("--open", "open_browser", is_flag=True, help="Open it in a browser.")
@json_option
def dashboard(config_path: str | None, open_browser: bool, as_json: bool) -> None:
    """Print the dashboard URL of this machine's gateway.

    \b
    Example:
      edge dashboard --open
    """
    settings = load(config_path)
    url = local_url(settings.server.host, settings.server.port)
    if as_json:
        emit({"url": url})
    else:
        click.echo(url)
    if open_browser:
        webbrowser.open(url)
