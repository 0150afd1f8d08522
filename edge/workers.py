"""Registry of live worker processes (``<data_dir>/run/<pid>``), for ``edge gateway reload``.

uvicorn's supervisor restarts its workers on SIGHUP, which would drop every
socket; signalling the workers themselves reloads in place instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from edge.config import Settings
from edge.hostcheck import process_alive


def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def register_worker(settings: Settings) -> Path:
    directory = run_dir(settings)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / str(os.getpid())
    path.write_text(f"{os.getpid()}\n", encoding="utf-8")
    return path


def unregister_worker(path: Path) -> None:
    path.unlink(missing_ok=True)


def live_worker_pids(settings: Settings) -> list[int]:
    """Registered workers still alive; stale entries (killed workers) are removed."""
    directory = run_dir(settings)
    if not directory.is_dir():
        return []
    pids = []
    for entry in directory.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if process_alive(pid):
            pids.append(pid)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return sorted(pids)
