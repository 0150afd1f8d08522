"""The child of ``test_process_metrics``: scrape a fresh gateway and read the kernel beside it.

It runs as its own interpreter so that nothing else shares the process while
it is measured: in the full suite, earlier tests leave threads and garbage
whose sockets and files can close at any moment, which would move the open
file count and the resident memory between the scrape and the kernel's
reading. Prints one JSON object: the two scrapes and the kernel's figures.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from edge import create_app
from tests.conftest import LOOPBACK, base_config, client_for

LOCAL_URL = "http://localhost:18789"
EXTRA_FDS = 20
SPIN_CPU_SECONDS = 0.3


def scrape(app: Any) -> str:
    with client_for(app, LOOPBACK, LOCAL_URL) as client:
        response = client.get("/metrics")
    if response.status_code != 200:
        raise SystemExit(f"/metrics answered {response.status_code}: {response.text[:200]}")
    return response.text


def resident_bytes() -> float:
    status = Path("/proc/self/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return float(line.split()[1]) * 1024


def started_at() -> float:
    """This process's start time, from its stat line and the boot time."""
    fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
    ticks = float(fields[19]) / os.sysconf("SC_CLK_TCK")
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks


def main(tmp: Path) -> None:
    app = create_app(base_config(tmp))
    scrape(app)  # the first scrape loads what the later ones use, so both are like for like
    before = scrape(app)
    kernel = {
        "resident_bytes": resident_bytes(),
        "started_at": started_at(),
        "max_fds": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
    spin_until = time.process_time() + SPIN_CPU_SECONDS
    while time.process_time() < spin_until:
        pass
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(EXTRA_FDS)]
    try:
        after = scrape(app)
    finally:
        for fd in extra:
            os.close(fd)
    print(json.dumps({"before": before, "after": after, "kernel": kernel}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
