"""Send-throughput benchmark: N one-step touches due now, sent into Postfix's smtp-sink.

Engine runs:
- embedded: `sequencer run` on SQLite, one process;
- scaled: 2 `sequencer worker` processes on PostgreSQL + Redis.
Each is timed from the start of the process(es) until the database says every touch is sent
(enrollment is done before and not counted); the sink's count of accepted messages must agree.

Baselines in the same run, over the same number of SMTP connections as the engine has
(mailboxes x pool size, per process):
- plain loop: aiosmtplib sending pre-built messages, one task per connection (the target is
  the engine at 0.8x of it or better);
- ceiling: Postfix's smtp-source with as many sessions.

Usage: .venv/bin/python bench/send_bench.py [--count 20000] [--mode embedded|scaled|both]
       [--no-record]
Appends the figures to bench/RESULTS.md (unless --no-record). Needs the Debian packages
postfix (smtp-sink, smtp-source), and for scaled mode postgresql and redis-server.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import REPO
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

SEQUENCE = "bench-send"
TEMPLATE = "bench-note"
OWNER = "ana.reyes@northwind.example"
OTHER = "marcus.oyelaran@northwind.example"
MAILBOXES = (OWNER, OTHER)
#: SMTP connections each mailbox keeps open per process (SmtpSettings.pool_size).
POOL_SIZE = 2
SECRET = "send-bench-secret-0123456789abcdef"
#: One immediate email, spread over both mailboxes, that no window, cap or gap holds back.
SEQUENCE_YAML = f"""\
description: One immediate email, for the send benchmark.
schedule:
  timezone: UTC
  days: every day
  hours: "00:00-23:59"
limits:
  min_gap: none
  max_per_week: none
mailbox: [{OWNER}, {OTHER}]
steps:
  - id: hello
    delay: immediately
    anytime: true
    email: {TEMPLATE}
"""
NOTE = """\
---
subject: "A note for {{ prospect.first_name | default('you') }} at {{ prospect.company }}"
---
Hi {{ prospect.first_name | default("there") }},

We help freight teams at companies like {{ prospect.company }} cut dwell time. One short
note, sent once and only once.

{{ sender.signature }}

{{ footer }}
"""
#: Give up on a run that has not finished in this long (seconds).
RUN_TIMEOUT = 1800.0


# --- the project ---------------------------------------------------------------------------


def write_project(work: Path, sink_port: int) -> None:
    """sequencer.yaml (the example's mailboxes, pointed at the sink, no caps or spacing), one
    sequence and one template."""
    work.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "sequencer.yaml").read_text())
    for box in config["mailboxes"]:
        box["smtp"] = {"host": "127.0.0.1", "port": sink_port, "security": "none", "timeout": 30}
        box["daily_cap"] = 1_000_000
        box["min_spacing"] = "0 minutes"
    config["sending"] = {"company_daily_limit": "none"}
    (work / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (work / "sequences").mkdir(exist_ok=True)
    (work / "sequences" / f"{SEQUENCE}.yaml").write_text(SEQUENCE_YAML)
    (work / "templates").mkdir(exist_ok=True)
    (work / "templates" / f"{TEMPLATE}.j2").write_text(NOTE)


def write_csv(path: Path, count: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email", "First Name", "Last Name", "Company", "Time Zone"])
        for i in range(count):
            writer.writerow(
                [f"person{i}@company{i % 997}.example", f"First{i}", f"Last{i}", f"Co {i}", "UTC"]
            )


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    env.update(
        SEQUENCER_DATABASE_URL=database_url,
        SEQUENCER_SECRET=SECRET,
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
        **extra,
    )
    return env


def sequencer(*args: str) -> list[str]:
    return [sys.executable, "-m", "sequencer", *args]


def prepare(work: Path, count: int, sink_port: int, database_url: str) -> None:
    """Project, schema and ``count`` enrolled prospects, each with one touch due now."""
    write_project(work, sink_port)
    people = work / "people.csv"
    write_csv(people, count)
    env = cli_env(database_url)
    for args in (("db", "upgrade"), ("enroll", SEQUENCE, str(people), "--owner", OWNER)):
        done = subprocess.run(sequencer(*args), cwd=work, env=env, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"sequencer {' '.join(args)} failed:\n{done.stderr.decode()}")


# --- watching a run ------------------------------------------------------------------------


async def touch_states(database_url: str) -> dict[str, int]:
    """How many touches are in each state (a plain read: no write lock on SQLite)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT state, count(*) FROM touches GROUP BY state")
            )
            return {state: n for state, n in rows.all()}
    finally:
        await engine.dispose()


async def wait_all_sent(
    database_url: str, count: int, processes: list[subprocess.Popen[bytes]], logs: list[Path]
) -> dict[str, int]:
    """Poll the database until ``count`` touches are sent; fails if a process exits or a
    touch ends any other way."""
    deadline = time.monotonic() + RUN_TIMEOUT
    engine = create_async_engine(database_url)
    try:
        while True:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text("SELECT state, count(*) FROM touches GROUP BY state")
                )
                states = {state: n for state, n in rows.all()}
            if states.get("sent", 0) >= count:
                return states
            bad = {s: n for s, n in states.items() if s in ("failed", "unknown", "cancelled")}
            for process, log in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    raise SystemExit(f"{process.args!r} exited early:\n{tail(log)}")
            if bad:
                raise SystemExit(f"touches ended badly: {states}\n{tail(logs[0])}")
            if time.monotonic() > deadline:
                raise SystemExit(f"not all sent after {RUN_TIMEOUT:.0f} s: {states}")
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


def start(args: list[str], work: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            args, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM and wait; a process that does not exit cleanly fails the benchmark."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise SystemExit(f"{process.args!r} did not stop within 60 s of SIGTERM") from None
    if process.returncode != 0:
        raise SystemExit(f"{process.args!r} exited with {process.returncode}:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


# --- the engine ----------------------------------------------------------------------------


def engine_embedded(count: int, sink_port: int, work: Path) -> float:
    """Seconds for `sequencer run` on SQLite to send ``count`` one-step immediate touches into
    the SMTP server on 127.0.0.1:``sink_port``, from process start until the database says all
    are sent. ``work`` (created if missing) holds the project, the database and the log;
    preparing them (enrolling) is not timed."""
    url = f"sqlite+aiosqlite:///{work / 'send.db'}"
    prepare(work, count, sink_port, url)
    log = work / "run.log"
    began = time.perf_counter()
    process = start(sequencer("run"), work, cli_env(url), log)
    try:
        asyncio.run(wait_all_sent(url, count, [process], [log]))
        seconds = time.perf_counter() - began
    finally:
        stop(process, log)
    return seconds


if __name__ == "__main__":
    import tempfile

    from sink import Sink

    total = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with Sink() as sink, tempfile.TemporaryDirectory() as tmp:
        took = engine_embedded(total, sink.port, Path(tmp))
        print(f"{total} in {took:.1f} s = {total / took:.0f} msgs/s; sink saw {sink.count()}")
