"""Where a soaked server's memory goes, sampled from inside it (``soak.py --memory-detail``).

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``; ``soak.py``
puts this directory there only for the ``edge serve`` it starts, and only with
``--memory-detail``. Every ``BENCH_MEMPROBE_EVERY`` seconds a daemon thread
appends one JSON line to ``BENCH_MEMPROBE_OUT``:

- ``rss_kib``: resident memory, from ``/proc/self/status``;
- ``malloc_in_use_kib`` / ``malloc_free_kib``: glibc's ``mallinfo2()``, bytes
  handed out and bytes free inside the heap (free growing while in use stays
  flat is fragmentation, not a leak);
- ``python_blocks``: ``sys.getallocatedblocks()``, Python's own small objects;
- ``sqlite_kib``: ``sqlite3_memory_used()``, all of SQLite in the process;
- ``sqlite_cache_kib`` / ``sqlite_statements_kib``: ``sqlite3_db_status``
  summed over the store's connections (one per thread), and their number.

Diagnostics only, for CPython on Linux with a shared libsqlite3; where a part
is not available it is left out of the line rather than guessed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import sys
import threading
import time
from typing import Any

SQLITE_DBSTATUS_CACHE_USED = 1
SQLITE_DBSTATUS_STMT_USED = 3
# pysqlite's Connection struct starts with its sqlite3* right after PyObject_HEAD.
_DB_POINTER_OFFSET = 2 * ctypes.sizeof(ctypes.c_void_p)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _rss_kib() -> int | None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def _library(name: str) -> Any:
    path = ctypes.util.find_library(name)
    return ctypes.CDLL(path) if path else None


def _sqlite_connections() -> list[Any]:
    found: list[Any] = []
    for candidate in gc.get_objects():
        if type(candidate).__name__ == "SqliteBackend":
            found.extend(getattr(candidate, "_connections", ()))
    return found


def _db_status(sqlite: Any, connection: Any, op: int) -> int:
    """``sqlite3_db_status(op)`` of one ``sqlite3.Connection``: bytes in use now."""
    db = ctypes.c_void_p.from_address(id(connection) + _DB_POINTER_OFFSET)
    current, highest = ctypes.c_int(), ctypes.c_int()
    sqlite.sqlite3_db_status(db, op, ctypes.byref(current), ctypes.byref(highest), 0)
    return current.value


def sample(libc: Any, sqlite: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"pid": os.getpid(), "at": time.time(), "rss_kib": _rss_kib()}
    line["python_blocks"] = sys.getallocatedblocks()
    if libc is not None and hasattr(libc, "mallinfo2"):
        info = libc.mallinfo2()
        line["malloc_in_use_kib"] = info.uordblks // 1024
        line["malloc_free_kib"] = info.fordblks // 1024
    if sqlite is not None:
        line["sqlite_kib"] = sqlite.sqlite3_memory_used() // 1024
        connections = _sqlite_connections()
        line["sqlite_connections"] = len(connections)
        line["sqlite_cache_kib"] = (
            sum(_db_status(sqlite, c, SQLITE_DBSTATUS_CACHE_USED) for c in connections) // 1024
        )
        line["sqlite_statements_kib"] = (
            sum(_db_status(sqlite, c, SQLITE_DBSTATUS_STMT_USED) for c in connections) // 1024
        )
    return line


def _run(out: str, every: float) -> None:
    libc, sqlite = _library("c"), _library("sqlite3")
    if libc is not None and hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    if sqlite is not None:
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    while True:
        time.sleep(every)
        # a diagnostic never disturbs the server
        with contextlib.suppress(Exception), open(out, "a", encoding="utf-8") as file:
            file.write(json.dumps(sample(libc, sqlite)) + "\n")


_OUT = os.environ.get("BENCH_MEMPROBE_OUT")
if _OUT and "serve" in sys.argv:
    _EVERY = float(os.environ.get("BENCH_MEMPROBE_EVERY", "10"))
    threading.Thread(target=_run, args=(_OUT, _EVERY), name="memprobe", daemon=True).start()
