"""Every benchmark in benchmarks/, one after the other, in one report.

Usage: python benchmarks/run.py [--quick] [--only NAME ...] [--output artifacts/benchmarks.md]

Runs each script of this directory (not this runner, not ``soak.py``, which is
a ten-minute reliability run of its own) as ``python benchmarks/<name>.py``,
passing ``--quick`` to those that accept it and ``--check`` to
``resolution.py`` (10,000 trusted networks within 1.2x of one). The benchmarks
take turns, never overlap, so each has the machine to itself. The report, on
stdout and in ``--output``, starts with one table of every benchmark (its
command, exit status and duration) followed by each benchmark's own output:
its Markdown tables as they are, everything else as preformatted text.
Exit status 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NOT_BENCHMARKS = frozenset({"run.py", "soak.py"})
EXTRA_ARGS = {"resolution.py": ("--check",)}
QUICK_TIMEOUT = 15 * 60
FULL_TIMEOUT = 60 * 60


@dataclass(frozen=True)
class Outcome:
    name: str
    command: str
    status: int
    seconds: float
    output: str


def benchmarks(only: list[str]) -> list[Path]:
    found = sorted(
        path
        for path in HERE.glob("*.py")
        if path.name not in NOT_BENCHMARKS and not path.name.startswith("_")
    )
    if only:
        wanted = {name if name.endswith(".py") else f"{name}.py" for name in only}
        missing = wanted - {path.name for path in found}
        if missing:
            raise SystemExit(f"no such benchmark: {', '.join(sorted(missing))}")
        found = [path for path in found if path.name in wanted]
    return found


def accepts(script: Path, option: str) -> bool:
    """Whether ``script --help`` mentions ``option``."""
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    ).stdout
    return option in help_text


def run(script: Path, quick: bool) -> Outcome:
    args = list(EXTRA_ARGS.get(script.name, ()))
    if quick and accepts(script, "--quick"):
        args.insert(0, "--quick")
    command = ["python", f"benchmarks/{script.name}", *args]
    print(f"running {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=QUICK_TIMEOUT if quick else FULL_TIMEOUT,
            check=False,
        )
        status, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as exc:
        status = 124
        output = (
            (exc.stdout or b"").decode(errors="replace")
            if isinstance(exc.stdout, bytes)
            else (exc.stdout or "")
        )
        output += "\n(timed out)"
    return Outcome(script.stem, " ".join(command), status, time.monotonic() - started, output)


def as_markdown(output: str) -> str:
    """Markdown tables kept as they are; every other run of lines in a code block."""
    parts: list[str] = []
    block: list[str] = []
    kind = ""
    for line in output.rstrip().splitlines():
        line_kind = "table" if line.lstrip().startswith("|") else "text"
        if line_kind != kind and block:
            parts.append(_render(kind, block))
            block = []
        kind = line_kind
        block.append(line)
    if block:
        parts.append(_render(kind, block))
    return "\n\n".join(part for part in parts if part)


def _render(kind: str, lines: list[str]) -> str:
    if kind == "table":
        return "\n".join(lines)
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return "```\n" + "\n".join(lines) + "\n```" if lines else ""


def report(outcomes: list[Outcome], quick: bool) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"`python benchmarks/run.py{' --quick' if quick else ''}` at {now}, commit "
        f"{commit or 'unknown'}; {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| benchmark | command | status | seconds |",
        "|-----------|---------|-------:|--------:|",
    ]
    for outcome in outcomes:
        verdict = "ok" if outcome.status == 0 else f"FAILED ({outcome.status})"
        lines.append(
            f"| {outcome.name} | `{outcome.command}` | {verdict} | {outcome.seconds:.0f} |"
        )
    for outcome in outcomes:
        lines += ["", f"## {outcome.name}", "", as_markdown(outcome.output)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to each benchmark")
    parser.add_argument("--only", nargs="*", default=[], metavar="NAME", help="run only these")
    parser.add_argument("--output", type=Path, default=REPO / "artifacts" / "benchmarks.md")
    args = parser.parse_args()
    outcomes = [run(script, args.quick) for script in benchmarks(args.only)]
    text = report(outcomes, args.quick)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(outcome.status == 0 for outcome in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
