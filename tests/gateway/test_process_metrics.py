"""``edge_process_*`` through the real ``/metrics``: the figures are the kernel's for this process.

The in-process test client runs the gateway in this very process, so each
figure can be checked against what the kernel says of it directly. With
several workers (multiprocess mode) none are exported: no process could speak
for the others.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge import __version__, create_app
from edge.metrics import MULTIPROC_ENV, Metrics, prepare_multiprocess_dir
from tests.conftest import LOOPBACK, base_config, client_for
from tests.gateway.test_metrics import LOCAL_URL, Exposition

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process figures are read from /proc"
)

FAMILIES = {
    "edge_process_resident_memory_bytes",
    "edge_process_start_time_seconds",
    "edge_process_cpu_seconds",
    "edge_process_open_fds",
    "edge_process_max_fds",
}


def scrape(app: Any) -> Exposition:
    with client_for(app, LOOPBACK, LOCAL_URL) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    return Exposition(response.text)


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


def test_a_single_process_gateway_exports_its_own_process_figures(tmp_path: Path) -> None:
    app = create_app(base_config(tmp_path))
    before = scrape(app)
    assert set(before.families) >= FAMILIES
    assert "edge_process_virtual_memory_bytes" not in before.text
    assert before.families["edge_process_cpu_seconds"].type == "counter"
    # The gateway's own series are all still there, beside them.
    assert before.value("edge_build_info", version=__version__) == 1

    assert before.value("edge_process_resident_memory_bytes") == pytest.approx(
        resident_bytes(), rel=0.1
    )
    assert before.value("edge_process_start_time_seconds") == pytest.approx(started_at(), abs=0.05)
    assert before.value("edge_process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    spin_until = time.process_time() + 0.3
    while time.process_time() < spin_until:
        pass
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]
    try:
        after = scrape(app)
    finally:
        for fd in extra:
            os.close(fd)
    assert after.value("edge_process_open_fds") - before.value("edge_process_open_fds") >= 20
    cpu = after.value("edge_process_cpu_seconds_total") - before.value(
        "edge_process_cpu_seconds_total"
    )
    assert cpu >= 0.25


def test_with_several_workers_no_process_figures_are_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import values

    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored afterwards
    monkeypatch.setenv(MULTIPROC_ENV, "")  # and the variable with it
    prepare_multiprocess_dir(tmp_path / "metrics")  # as edge serve does for several workers
    other_worker = Metrics(__version__)
    other_worker.observe_request("http", "paired", 0.01)
    app = create_app(base_config(tmp_path))
    exposition = scrape(app)
    assert exposition.value("edge_requests_total", kind="http", decision="paired") == 1
    assert not FAMILIES & set(exposition.families)
    assert "edge_process_" not in exposition.text
