"""The crash test: `sequencer run` is killed with SIGKILL again and again while it sends, then
run to the end. Invariant 1 (never twice) and 3 (nothing lost) must hold: no Message-ID arrives
twice, every touch ends sent, failed or unknown, and what arrived belongs to a touch that says
so. Real processes, a real SMTP server on loopback and a real database, on both backends.

How many touches may end `unknown`: a touch is marked `sending` (committed) only once it holds
one of its mailbox's SMTP connections, and a process that dies leaves exactly its `sending`
touches in doubt: the next process finds them and settles them as `unknown`, never resending
them. So the bound is kills x (sends one process can have in flight), and it is checked in one
place, `check_outcome`, for two shapes of the run:

- **one at a time** (the issue's bound, literally): one mailbox and a runner with
  SEQUENCER_CONCURRENCY=1, so one send at a time on one SMTP connection: unknown <= kills;
- **concurrent** (how `sequencer run` is used): two mailboxes, each with an SMTP pool of two
  connections, and a runner with 8 send slots: at most 2 x 2 = 4 sends are on the wire at
  once, so unknown <= kills x 4. Touches waiting for a connection are still `queued`, and a
  kill sends those back to the queue, not to `unknown`.

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
from helpers import OTHER_MAILBOX, OWNER, load, make_project, one_email_sequence, person
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
#: Both mailboxes, or Ana's alone: sends spread over two SMTP pools, or all on one.
BOTH_MAILBOXES = (OWNER, OTHER_MAILBOX)


def one_email(mailboxes: tuple[str, ...] = BOTH_MAILBOXES) -> str:
    """One immediate email, spread over ``mailboxes``, whatever the time of day the test runs
    (`anytime` lifts even the last minute, 23:59-24:00, that the window syntax leaves out)."""
    return one_email_sequence(TEMPLATE, mailboxes)


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
#: Bound on the run to the end after the last kill (20-45 s on a 2-core machine).
FINISH_TIMEOUT = 150.0


# --- a project -----------------------------------------------------------------------------


def one_email_project(
    root: Path,
    smtp_port: int,
    *,
    smtp_timeout: float = 5,
    mailboxes: tuple[str, ...] = BOTH_MAILBOXES,
) -> Project:
    """A project whose one sequence sends one immediate email, from ``mailboxes`` that point
    at the SMTP server on ``smtp_port`` (no TLS, no login) and that no cap or spacing slows."""
    project = make_project(
        root, {SEQUENCE: one_email(mailboxes)}, templates={TEMPLATE: NOTE}, examples=False
    )
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


@dataclass(frozen=True)
class Shape:
    """How the killed runner sends: through which mailboxes, with how many send slots."""

    mailboxes: tuple[str, ...]
    concurrency: int
    #: The SMTP pool of each mailbox (SmtpSettings.pool_size, the default).
    connections_per_mailbox: int = 2

    @property
    def in_flight(self) -> int:
        """Sends one process can have on the wire at once: a send is marked `sending` only
        once it holds a connection, and it holds one of its send slots meanwhile."""
        return min(self.concurrency, len(self.mailboxes) * self.connections_per_mailbox)


ONE_AT_A_TIME = Shape(mailboxes=(OWNER,), concurrency=1)
CONCURRENT = Shape(mailboxes=BOTH_MAILBOXES, concurrency=8)


@dataclass(frozen=True)
class CrashRun:
    """What a crash run left behind: the touches and what the SMTP server received."""

    rows: list[TouchRow]
    received: Counter[str]
    messages: int
    kills: int
    runs_that_sent: int

    @property
    def states(self) -> Counter[str]:
        return Counter(r.state for r in self.rows)

    @property
    def unknown_delivered(self) -> int:
        return sum(1 for r in self.rows if r.state == "unknown" and r.message_id in self.received)


def check_outcome(run: CrashRun, shape: Shape, prospects: int) -> None:
    """The invariants after a crash run, for any shape: one place for the bound on unknown."""
    states = run.states
    duplicates = [i for i, n in run.received.items() if n > 1]
    sent_ids = [r.message_id for r in run.rows if r.state == "sent"]
    owned = {r.message_id for r in run.rows if r.state in ("sent", "unknown")}
    assert run.kills >= KILLS
    # Most kills hit a process in the middle of sending, not one still starting up.
    assert run.runs_that_sent >= run.kills // 2
    assert len(run.rows) == prospects
    assert not duplicates, duplicates[:5]
    assert set(states) <= {"sent", "failed", "unknown"}, states
    # A touch becomes unknown only when a process died holding it in `sending`, and a process
    # holds at most shape.in_flight touches there (see the module docstring).
    assert states["unknown"] <= run.kills * shape.in_flight, (states, shape)
    assert all(run.received[i] == 1 for i in sent_ids if i is not None)
    assert None not in sent_ids
    assert set(run.received) <= owned
    assert states["sent"] + run.unknown_delivered == run.messages


async def kill_repeatedly(
    database_url: str, tmp_path: Path, shape: Shape, *, prospects: int = PROSPECTS
) -> CrashRun:
    """Enroll ``prospects`` due now, SIGKILL `sequencer run` KILLS times at random moments
    while it sends, then let one last run finish everything and stop it with SIGTERM."""
    seed = int(os.environ.get("CRASH_SEED") or random.randrange(1 << 32))
    chance = random.Random(seed)
    began = time.monotonic()
    with RecordingSMTPServer() as smtp:
        root = tmp_path / "project"
        project = one_email_project(root, smtp.port, mailboxes=shape.mailboxes)
        await enroll_prospects(database_url, project, prospects)
        enrolled = time.monotonic()
        env = cli_env(
            database_url, SEQUENCER_STALE_AFTER="1", SEQUENCER_CONCURRENCY=str(shape.concurrency)
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
        result = CrashRun(rows, received_ids(smtp), len(smtp.messages), kills, runs_that_sent)
        connections = smtp.connections
    seconds = time.monotonic() - began
    states = result.states
    duplicates = sum(n - 1 for n in result.received.values() if n > 1)
    print(
        f"\ncrash test [{database_url.split(':')[0]}, {len(shape.mailboxes)} mailbox(es), "
        f"concurrency {shape.concurrency}, at most {shape.in_flight} in flight] seed={seed}: "
        f"kills={kills} (of runs that had sent {runs_that_sent}) "
        f"prospects={prospects} sent={states['sent']} unknown={states['unknown']} "
        f"(delivered {result.unknown_delivered}) failed={states['failed']} "
        f"received={result.messages} (before the last run {sent_before_last_run}) "
        f"duplicates={duplicates} smtp connections={connections} "
        f"seconds={seconds:.1f} (enrolling {enrolled - began:.1f}, killing "
        f"{killed - enrolled:.1f}, last run {began + seconds - killed:.1f})"
    )
    if shape.in_flight == 1:
        # One connection per process (the runner opens it on its first send), and none more.
        assert connections <= kills + 1, connections
    return result


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_killing_the_runner_never_sends_a_step_twice(
    database_url: str, tmp_path: Path
) -> None:
    """Concurrent sending: up to CONCURRENT.in_flight touches per kill may end unknown."""
    run = await kill_repeatedly(database_url, tmp_path, CONCURRENT)
    check_outcome(run, CONCURRENT, PROSPECTS)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_killing_a_one_at_a_time_runner_leaves_at_most_one_unknown_per_kill(
    database_url: str, tmp_path: Path
) -> None:
    """The issue's bound literally: one send in flight per process, so unknown <= kills."""
    assert ONE_AT_A_TIME.in_flight == 1
    run = await kill_repeatedly(database_url, tmp_path, ONE_AT_A_TIME)
    check_outcome(run, ONE_AT_A_TIME, PROSPECTS)
    assert run.states["unknown"] <= run.kills
