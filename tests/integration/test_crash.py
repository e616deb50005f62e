"""The crash test: `sequencer run` is killed with SIGKILL again and again while it sends, then
run to the end. Invariant 1 (never twice) and 3 (nothing lost) must hold: no Message-ID arrives
twice, every touch ends sent, failed or unknown, and what arrived belongs to a touch that says
so. Real processes, a real SMTP server on loopback and a real database, on both backends.

The helpers here (a project with one immediate email, running the CLI as a subprocess, reading
touch states) are shared with test_worker_arq.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import OTHER_MAILBOX, OWNER, load, make_project, person
from servers.smtp import RecordingSMTPServer
from sqlalchemy import select

from sequencer.catalog import Project
from sequencer.runtime.clock import SystemClock
from sequencer.runtime.engine import Engine
from sequencer.runtime.enrollment import enroll
from sequencer.store.database import Database
from sequencer.store.models import Touch

SECRET = "crash-test-secret-0123456789abcdef"
SEQUENCE = "crash"
TEMPLATE = "crash-note"
#: One immediate email, spread over both mailboxes. The window covers the whole day and
#: `anytime` lifts even the last minute (23:59-24:00) the window syntax leaves out, so the
#: test never waits for a window whatever the time of day it runs.
ONE_EMAIL = f"""\
description: One immediate email, for crash tests.
schedule:
  timezone: UTC
  days: every day
  hours: "00:00-23:59"
limits:
  min_gap: none
  max_per_week: none
mailbox: [{OWNER}, {OTHER_MAILBOX}]
steps:
  - id: hello
    delay: immediately
    anytime: true
    email: {TEMPLATE}
"""
NOTE = """\
---
subject: "A note for {{ prospect.first_name | default('you') }}"
---
Hi {{ prospect.first_name | default("there") }},

One short note, sent once and only once.

{{ sender.signature }}

{{ footer }}
"""
PENDING_STATES = ("scheduled", "queued", "sending")
#: How long a CLI process may take to start sending (imports, schema check, sync).
START_TIMEOUT = 30.0
#: How long a process may take to exit after SIGTERM (it finishes its sends in flight).
STOP_TIMEOUT = 30.0

KILLS = 20
PROSPECTS = 2000
CONCURRENCY = 8
IN_FLIGHT_PER_PROCESS = 4  # 2 mailboxes, each with an SMTP pool of 2 connections
#: Bound on the run to the end after the last kill (20-45 s on a 2-core machine).
FINISH_TIMEOUT = 150.0


# --- a project -----------------------------------------------------------------------------


def one_email_project(root: Path, smtp_port: int, *, smtp_timeout: float = 5) -> Project:
    """A project whose one sequence sends one immediate email, from mailboxes that point at
    the SMTP server on ``smtp_port`` (no TLS, no login) and that no cap or spacing slows."""
    project = make_project(root, {SEQUENCE: ONE_EMAIL}, templates={TEMPLATE: NOTE}, examples=False)
    config = yaml.safe_load((root / "sequencer.yaml").read_text())
    for box in config["mailboxes"]:
        box["smtp"] = {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "timeout": smtp_timeout,
        }
        box["daily_cap"] = 100000
        box["min_spacing"] = "0 minutes"
    config["sending"] = {"company_daily_limit": "none"}
    (root / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return project


async def enroll_prospects(url: str, project: Project, count: int) -> None:
    """Enroll ``count`` prospects through the library, due now (real clock)."""
    database = Database(url)
    try:
        engine = Engine(database, load(project), clock=SystemClock())
        await engine.sync_sequences()
        rows = [
            person(f"p{i:05d}@company{i % 97}.example", line=i + 2, timezone="UTC")
            for i in range(count)
        ]
        report = await enroll(engine, SEQUENCE, rows, owner=OWNER)
        assert not report.skipped, report.skipped[:3]
    finally:
        await database.close()


# --- reading back --------------------------------------------------------------------------


@dataclass(frozen=True)
class TouchRow:
    id: int
    state: str
    message_id: str | None


async def touch_rows(db: Database) -> list[TouchRow]:
    async with db.transaction() as s:
        result = await s.execute(select(Touch.id, Touch.state, Touch.message_id))
        return [TouchRow(*row) for row in result.all()]


async def wait_until_terminal(
    db: Database,
    timeout: float,
    processes: Iterable[subprocess.Popen[bytes]] = (),
    *,
    every: float = 0.25,
    sample: Callable[[], Awaitable[object]] | None = None,
) -> list[TouchRow]:
    """Poll until no touch is scheduled, queued or sending, calling ``sample`` on each round;
    fails after ``timeout`` seconds or when one of ``processes`` exits meanwhile."""
    watched = list(processes)
    deadline = time.monotonic() + timeout
    while True:
        if sample is not None:
            await sample()
        rows = await touch_rows(db)
        left = Counter(r.state for r in rows if r.state in PENDING_STATES)
        if not left:
            return rows
        for process in watched:
            assert process.poll() is None, f"{process.args!r} exited early ({process.returncode})"
        assert time.monotonic() < deadline, f"still pending after {timeout} s: {dict(left)}"
        await asyncio.sleep(every)


def received_ids(server: RecordingSMTPServer) -> Counter[str]:
    return Counter(str(m.parsed["Message-ID"]) for m in server.messages)


# --- processes -----------------------------------------------------------------------------


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: ours without any SEQUENCER_* variable, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    env.update(
        SEQUENCER_DATABASE_URL=database_url,
        SEQUENCER_SECRET=SECRET,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def start_cli(root: Path, env: Mapping[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m sequencer ARGS`` in the project, its output appended to ``log``."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sequencer", *args],
            cwd=root,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_for_line(
    process: subprocess.Popen[bytes], log: Path, text: str, timeout: float = START_TIMEOUT
) -> None:
    """Wait until ``text`` appears in ``log``."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} within {timeout} s:\n{tail(log)}")
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, and the exit code; a process that hangs is killed and fails the test."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        command = " ".join(map(str, process.args))  # type: ignore[arg-type]
        raise AssertionError(f"{command} did not exit within {timeout} s of SIGTERM") from None


def kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


# --- the test ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_killing_the_runner_never_sends_a_step_twice(
    database_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CRASH_SEED") or random.randrange(1 << 32))
    chance = random.Random(seed)
    began = time.monotonic()
    with RecordingSMTPServer() as smtp:
        root = tmp_path / "project"
        project = one_email_project(root, smtp.port)
        await enroll_prospects(database_url, project, PROSPECTS)
        enrolled = time.monotonic()
        env = cli_env(
            database_url, SEQUENCER_STALE_AFTER="1", SEQUENCER_CONCURRENCY=str(CONCURRENCY)
        )
        kills = runs_that_sent = 0
        for run in range(KILLS):
            log = tmp_path / f"run-{run}.log"
            arrived = len(smtp.messages)
            process = start_cli(root, env, log, "run")
            try:
                wait_for_line(process, log, "Ctrl-C to stop")
                time.sleep(chance.uniform(0.3, 1.5))
            finally:
                kill(process)
            kills += 1
            runs_that_sent += len(smtp.messages) > arrived
        sent_before_last_run = len(smtp.messages)
        # Longer than SEQUENCER_STALE_AFTER since the last kill: the last run's first
        # housekeeping recovers everything the killed processes left behind.
        time.sleep(1.2)
        killed = time.monotonic()
        log = tmp_path / "run-last.log"
        process = start_cli(root, env, log, "run")
        db = Database(database_url)
        try:
            rows = await wait_until_terminal(db, FINISH_TIMEOUT, [process])
        finally:
            await db.close()
            code = stop(process)
        assert code == 0, tail(log)
        # Its own sends stayed its own, however long the run: none was judged abandoned.
        assert "Traceback" not in log.read_text(errors="replace"), tail(log)
        received = received_ids(smtp)
        messages = len(smtp.messages)
    seconds = time.monotonic() - began

    states = Counter(r.state for r in rows)
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    sent_ids = [r.message_id for r in rows if r.state == "sent"]
    owned = {r.message_id for r in rows if r.state in ("sent", "unknown")}
    unknown_delivered = sum(1 for r in rows if r.state == "unknown" and r.message_id in received)
    print(
        f"\ncrash test [{database_url.split(':')[0]}] seed={seed}: kills={kills} "
        f"(of runs that had sent {runs_that_sent}) "
        f"prospects={PROSPECTS} sent={states['sent']} unknown={states['unknown']} "
        f"(delivered {unknown_delivered}) failed={states['failed']} received={messages} "
        f"(before the last run {sent_before_last_run}) duplicates={duplicates} "
        f"seconds={seconds:.1f} (enrolling {enrolled - began:.1f}, killing "
        f"{killed - enrolled:.1f}, last run {began + seconds - killed:.1f})"
    )

    assert kills >= 20
    # Most kills hit a process in the middle of sending, not one still starting up.
    assert runs_that_sent >= kills // 2
    assert len(rows) == PROSPECTS
    assert duplicates == 0, [i for i, n in received.items() if n > 1][:5]
    assert set(states) <= {"sent", "failed", "unknown"}, states
    # A touch becomes unknown only when a process died holding it in `sending`; a process
    # has at most CONCURRENCY sends started at once.
    # A touch is marked `sending` only once it holds one of its mailbox's SMTP connections
    # (2 mailboxes x 2 connections), so a kill can leave at most that many in doubt.
    assert states["unknown"] <= kills * IN_FLIGHT_PER_PROCESS, states
    assert all(received[i] == 1 for i in sent_ids if i is not None)
    assert None not in sent_ids
    assert set(received) <= owned
    assert states["sent"] + unknown_delivered == messages
