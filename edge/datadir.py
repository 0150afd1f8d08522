"""``data_dir`` is the root of trust: it and the secrets in it must be the gateway user's alone.

Authority comes from what ``data_dir`` holds (the gateway token, the pairing
store with every device token hash, key files). Whoever can write there can
swap in a gateway token the next reload accepts, or a store of their own
devices, so ``edge serve`` refuses to start, and a reload refuses a token
file, when any of them is writable by group or others, or is owned by a user
other than the gateway's (root excepted: it can write anything anyway). Each
problem is one line naming the path and the exact command that fixes it.
``edge doctor`` reports the same problems without touching anything.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.config import Settings
from edge.pairing.store import DEFAULT_SQLITE_NAME, sqlite_path_of

GENERATED_SECRETS = ("gateway_token",)
SECRET_SUFFIXES = (".key", ".pem", "_token")
SQLITE_COMPANIONS = ("", "-wal", "-shm")


@dataclass(frozen=True)
class PermissionProblem:
    path: Path
    what: str  # "data_dir", "gateway token file", "pairing store", "key file"
    problem: str  # "is writable by group and others (mode 0777)"
    fix: str  # "chmod 700 /srv/edge/data"

    def line(self) -> str:
        return f"{self.what} {self.path} {self.problem}; run: {self.fix}"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _check(
    path: Path, what: str, *, directory: bool, sticky_ok: bool = False
) -> list[PermissionProblem]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [
            PermissionProblem(
                path,
                what,
                f"cannot be inspected ({exc.strerror or exc})",
                f"ls -ld {path}  # and give it to the gateway's user",
            )
        ]
    mode = stat.S_IMODE(info.st_mode)
    me = os.geteuid()
    fixes: list[str] = []
    problems: list[str] = []
    if info.st_uid not in (me, 0):
        problems.append(
            f"is owned by {_user_name(info.st_uid)}, not by edge's user {_user_name(me)}"
        )
        fixes.append(f"chown {_user_name(me)} {path}")
    writers = [
        who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit
    ]
    if writers and sticky_ok and directory and mode & stat.S_ISVTX:
        writers = []  # others may add files there, but not replace or remove ours
    if writers:
        problems.append(f"is writable by {' and '.join(writers)} (mode {mode:04o})")
        fixes.append(f"chmod {'700' if directory else '600'} {path}")
    if not problems:
        return []
    return [PermissionProblem(path, what, " and ".join(problems), " && ".join(fixes))]


def _secrets_in(data_dir: Path) -> Iterable[tuple[Path, str]]:
    try:
        entries = sorted(data_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name in GENERATED_SECRETS:
            yield entry, "gateway token file"
        elif name.startswith(DEFAULT_SQLITE_NAME) or name.endswith((".sqlite3", ".db")):
            yield entry, "pairing store"
        elif name.endswith(SECRET_SUFFIXES) and entry.is_file():
            yield entry, "key file"


def permission_problems(settings: Settings) -> list[PermissionProblem]:
    """Every way ``data_dir``, a token file or the store could be changed by someone else."""
    data_dir = settings.data_dir
    found = _check(data_dir, "data_dir", directory=True)
    seen = {data_dir}
    for path, what in _secrets_in(data_dir):
        seen.add(path)
        found += _check(path, what, directory=path.is_dir())
    token_file = settings.auth.token_file
    if token_file is not None and token_file not in seen:
        seen.add(token_file)
        found += token_file_problems(token_file)
    store = sqlite_path_of(settings.store.url, data_dir)
    if store is not None:
        for suffix in SQLITE_COMPANIONS:
            path = store.with_name(store.name + suffix)
            if path not in seen:
                seen.add(path)
                found += _check(path, "pairing store", directory=False)
        if store.parent not in seen:
            found += _check(store.parent, "pairing store's directory", directory=True)
    return found


def token_file_problems(path: Path) -> list[PermissionProblem]:
    """A configured token file: the file and the directory it may be swapped in."""
    return _check(path, "gateway token file", directory=False) + _check(
        path.parent, "gateway token file's directory", directory=True, sticky_ok=True
    )
