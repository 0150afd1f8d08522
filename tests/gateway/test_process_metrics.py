"""``process_*`` and ``python_*`` through the real ``/metrics``: the figures are the kernel's for this process.

The gateway runs in a fresh interpreter of its own (``process_figures``), so each
figure can be checked against what the kernel says of that process directly,
with nothing else in it to open or close files or grow memory meanwhile. With
several workers (multiprocess mode) none are exported: no process could speak
for the others.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge import __version__, create_app
from edge.metrics import MULTIPROC_ENV, Metrics, prepare_multiprocess_dir
from tests.conftest import LOOPBACK, base_config, client_for
from tests.gateway.process_figures import EXTRA_FDS, LOCAL_URL, SPIN_CPU_SECONDS
from tests.gateway.test_metrics import Exposition

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process figures are read from /proc"
)

FAMILIES = {
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_cpu_seconds",
    "process_open_fds",
    "process_max_fds",
    "python_info",
    "python_gc_objects_collected",
    "python_gc_collections",
}


def scrape(app: Any) -> Exposition:
    with client_for(app, LOOPBACK, LOCAL_URL) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    return Exposition(response.text)


def measured_in_a_process_of_its_own(tmp_path: Path) -> dict[str, Any]:
    """Two scrapes of a gateway in a fresh interpreter, and that process's kernel figures."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop(MULTIPROC_ENV, None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.gateway.process_figures", str(tmp_path)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_single_process_gateway_exports_its_own_process_figures(tmp_path: Path) -> None:
    measured = measured_in_a_process_of_its_own(tmp_path)
    before, after = Exposition(measured["before"]), Exposition(measured["after"])
    kernel = measured["kernel"]
    assert set(before.families) >= FAMILIES
    assert before.families["process_cpu_seconds"].type == "counter"
    major, minor, patchlevel = platform.python_version_tuple()
    interpreter = {"major": major, "minor": minor, "patchlevel": patchlevel}
    assert (
        before.value(
            "python_info",
            implementation=platform.python_implementation(),
            version=platform.python_version(),
            **interpreter,
        )
        == 1
    )
    # The gateway's own series are all still there, beside them.
    assert before.value("edge_build_info", version=__version__) == 1

    assert before.value("process_resident_memory_bytes") == pytest.approx(
        kernel["resident_bytes"], rel=0.1
    )
    assert before.value("process_start_time_seconds") == pytest.approx(
        kernel["started_at"], abs=0.05
    )
    assert before.value("process_max_fds") == kernel["max_fds"]

    assert after.value("process_open_fds") - before.value("process_open_fds") >= EXTRA_FDS
    cpu = after.value("process_cpu_seconds_total") - before.value("process_cpu_seconds_total")
    assert cpu >= SPIN_CPU_SECONDS - 0.05


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
    assert not re.search(r"^(# (HELP|TYPE) )?(process|python)_", exposition.text, re.M)
