"""Coverage-guided fuzzing with atheris: each target of ``atheris_targets.py`` for a bounded run.

Each target runs in its own process (libFuzzer exits the process when it is
done), from a seed corpus of real inputs, for a fixed number of inputs rather
than a time: the same work on a fast or a slow machine. A crash or a failed
check makes libFuzzer exit non-zero and save the input, which the assertion
message shows. Skipped where atheris does not install (it ships wheels for
CPython on x86_64 and aarch64 Linux).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge.pairing.identity import DeviceKey

pytest.importorskip("atheris")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TARGETS = HERE / "atheris_targets.py"
RUNS = 40_000
NONCE = "n" * 43  # atheris_targets.NONCE
NOW_MS = 1_780_000_000_000  # atheris_targets.NOW_MS


def _connect_seeds() -> list[bytes]:
    key = DeviceKey.generate()
    frames = []
    for auth in ({}, {"token": "t" * 43}, {"deviceToken": "d" * 43}, {"invite": "ABCD-EFGH"}):
        for role in ("user", "admin"):
            frames.append(
                {
                    "type": "connect",
                    "auth": auth,
                    "device": key.device_field(NONCE, role, signed_at_ms=NOW_MS),
                    "client": {"name": "Alice's laptop", "app": "control-ui", "version": "1.0"},
                    "role": role,
                }
            )
    return [json.dumps(frame).encode() for frame in frames]


SEEDS: dict[str, list[bytes]] = {
    # peer, policy, websocket and header choices are read from the front of the input
    "resolution": [
        bytes([1, 3, 0, 3, 9]) + b"203.0.113.9, 10.0.0.1" + bytes([4]) + b"edge.example.com",
        bytes([2, 2, 1, 2, 2]) + b'for="[2001:db8::7]:443";proto=https' + bytes([5]) + b"x",
    ],
    "forwarded": [
        b"203.0.113.9, 10.0.0.1,10.0.0.2",
        b'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"',
        b'for="_gazonk", for=unknown',
    ],
    "connect": _connect_seeds(),
    "config": [(REPO / "config" / "edge.yaml").read_bytes()],
}


@pytest.mark.parametrize("target", sorted(SEEDS))
def test_atheris_finds_no_crash(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index, seed in enumerate(SEEDS[target]):
        (corpus / f"seed-{index}").write_bytes(seed)
    crashes = tmp_path / "crash-"
    run = subprocess.run(
        [
            sys.executable,
            str(TARGETS),
            target,
            f"-runs={RUNS}",
            "-max_len=4096",
            "-rss_limit_mb=1024",
            "-timeout=10",
            f"-artifact_prefix={crashes}",
            "-seed=1",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    saved = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("timeout-*"))
    report = run.stderr[-4000:]
    assert run.returncode == 0, f"atheris {target}: exit {run.returncode}\n{report}\n{saved}"
    assert f"Done {RUNS} runs" in run.stderr, report
    # the fuzzer reached code beyond the entry point: the seeds were understood
    coverage = [int(found) for found in re.findall(r"\bcov: (\d+)", run.stderr)]
    assert coverage and max(coverage) > 20, report
