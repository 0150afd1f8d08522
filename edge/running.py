"""Where a running gateway says which configuration it runs, so the CLI finds it without ``-c``.

Without ``-c`` a management command would read the built-in defaults, whose
``data_dir`` is ``./data`` of wherever it is run: another world than the
gateway's, where ``edge token show`` finds no token and ``edge devices list``
no devices. ``edge serve`` therefore records, for its lifetime, its
configuration file (or none), its absolute ``data_dir`` and its address in a
per-user runtime directory that does not depend on any configuration:
``$EDGE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/edge``, else
``<tmp>/edge-<uid>``. The directory must be the user's own and private
(0700), or nothing is read from or written to it: another user must not be
able to point this user's CLI at a file of theirs.

Each worker answers ``edge gateway reload`` (a SIGHUP carries no answer) in
``<data_dir>/status/<pid>.reload.json``: a sequence number, whether it reloaded,
what changed or why it refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.hostcheck import process_alive

RUNTIME_DIR_ENV = "EDGE_RUNTIME_DIR"


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(RUNTIME_DIR_ENV):
        return Path(env[RUNTIME_DIR_ENV])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "edge"
    return Path(tempfile.gettempdir()) / f"edge-{os.getuid()}"


def _private(directory: Path, *, create: bool) -> bool:
    """Whether ``directory`` is a real directory of this user's, closed to others."""
    if create:
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        info = directory.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def write_private_json(path: Path, document: object) -> None:
    """Replace ``path`` atomically with ``document`` as JSON, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(document, file)
    os.replace(temporary, path)


def read_json(path: Path) -> Any:
    """``path``'s JSON, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class RunningGateway:
    """One ``edge serve`` process, as it recorded itself."""

    pid: int
    config: str | None  # the absolute path of its file; None: built-in defaults
    data_dir: str
    url: str
    started_at: float

    def describe(self) -> str:
        return f"pid {self.pid}, {self.config or 'built-in defaults'}, data_dir {self.data_dir}"


def record_gateway(
    config: str | None, data_dir: Path, url: str, environ: Mapping[str, str] | None = None
) -> Path | None:
    """Record this process as a running gateway; None when the runtime directory is not safe."""
    directory = runtime_dir(environ)
    if not _private(directory, create=True):
        return None
    record = RunningGateway(
        pid=os.getpid(),
        config=None if config is None else str(Path(config).resolve()),
        data_dir=str(data_dir.resolve()),
        url=url,
        started_at=time.time(),
    )
    path = directory / f"gateway-{os.getpid()}.json"
    try:
        write_private_json(path, asdict(record))
    except OSError:
        return None
    return path


def forget_gateway(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def running_gateways(environ: Mapping[str, str] | None = None) -> list[RunningGateway]:
    """The gateways of this user that run now; records of dead ones are removed."""
    directory = runtime_dir(environ)
    if not _private(directory, create=False):
        return []
    found = []
    for path in sorted(directory.glob("gateway-*.json")):
        data = read_json(path)
        try:
            record = RunningGateway(
                pid=int(data["pid"]),
                config=None if data.get("config") is None else str(data["config"]),
                data_dir=str(data["data_dir"]),
                url=str(data["url"]),
                started_at=float(data["started_at"]),
            )
        except (KeyError, TypeError, ValueError):
            continue
        if process_alive(record.pid):
            found.append(record)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return found


# -- reload answers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadAnswer:
    """What one worker did with a SIGHUP."""

    seq: int
    ok: bool
    changed: list[str]
    error: str | None
    source: str | None


def status_dir(data_dir: Path) -> Path:
    """Where workers leave what the CLI reads of them; ``run/`` holds only their registrations."""
    return data_dir / "status"


def answer_path(data_dir: Path, pid: int) -> Path:
    return status_dir(data_dir) / f"{pid}.reload.json"


def read_answer(data_dir: Path, pid: int) -> ReloadAnswer | None:
    data = read_json(answer_path(data_dir, pid))
    try:
        return ReloadAnswer(
            seq=int(data["seq"]),
            ok=bool(data["ok"]),
            changed=[str(name) for name in data.get("changed") or []],
            error=None if data.get("error") is None else str(data["error"]),
            source=None if data.get("source") is None else str(data["source"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def write_answer(data_dir: Path, answer: ReloadAnswer) -> None:
    """Blocking; the worker's own answer for ``edge gateway reload`` to print."""
    write_private_json(answer_path(data_dir, os.getpid()), asdict(answer))


def forget_answer(data_dir: Path) -> None:
    with contextlib.suppress(OSError):
        answer_path(data_dir, os.getpid()).unlink()
