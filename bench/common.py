"""What every benchmark shares: the machine line, the results file, measured child processes,
a copy of the example project to work in, and the test suite's real servers."""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "Each entry: date, machine, figures and the ratio to a baseline measured in the same run.\n\n"
)

# The servers the test suite starts (PostgreSQL, Redis, Dovecot, aiosmtpd) live in tests/servers.
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))


def machine() -> str:
    """One line naming the machine, for the results file."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    one, five, fifteen = os.getloadavg()
    load = f", load {one:.2f} {five:.2f} {fifteen:.2f}"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, "
        f"Python {platform.python_version()}{load}"
    )


def heading(title: str) -> str:
    """A results heading with the date: `### <title> (YYYY-MM-DD HH:MM UTC)`."""
    return f"### {title} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"


def record(text: str, *, enabled: bool = True) -> None:
    """Print an entry and append it to bench/RESULTS.md (under a lock: benchmarks may overlap)."""
    print(text)
    if not enabled:
        return
    with RESULTS.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if handle.tell() == 0:
            handle.write(HEADER)
        handle.write(text.rstrip("\n") + "\n\n")


def run_measured(args: list[str], env: Mapping[str, str], cwd: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB, stdout) of one child process; exits naming it if it fails.
    Output goes through temporary files, so a chatty child never blocks on a full pipe."""
    import time

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, env=dict(env), cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{stderr}")
    return elapsed, usage.ru_maxrss // 1024, stdout


def copy_project(work: Path) -> None:
    """Copy the example project (sequencer.yaml, sequences/, templates/) into work."""
    for folder in ("sequences", "templates"):
        shutil.copytree(REPO / folder, work / folder)
    shutil.copy(REPO / "sequencer.yaml", work / "sequencer.yaml")


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction 0.5 = median, 0.99 = p99) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]
