"""SMTP faults under load: a few hundred touches through the real runner (LocalRunner: the
dispatcher and the sender, as `sequencer run` wires them) against an SMTP server that meets
each recipient with a seeded schedule of faults: 421 and 451 at RCPT, 451 after the content,
550, a reset before DATA and a reset after the content (the reply lost).

What must hold, recipient by recipient, exactly as the schedule predicts: transient faults are
retried until the email goes out, or fail once the retry budget is spent, with the server's
words; a 550 bounces, suppresses the address and stops every enrollment of the prospect; a
reply lost after DATA leaves the touch `unknown` and, under the `hold` policy, it is never
tried again; a reset before DATA is retried without spending the budget; and no Message-ID
ever reaches the server twice. The clock is a ManualClock moved from one due time to the
next, so hours of retries and pauses take seconds.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

import yaml
from helpers import (
    OWNER,
    TUESDAY_10AM,
    enrollments,
    person,
    running_engine,
    write_sequence,
)
from servers.smtp import FaultySMTPServer
from sqlalchemy import select
from test_crash import NOTE, SEQUENCE, TEMPLATE, one_email_project

from sequencer.catalog import Project
from sequencer.core.states import TouchState
from sequencer.runtime.clock import ManualClock
from sequencer.runtime.dispatcher import LocalRunner
from sequencer.runtime.engine import Engine
from sequencer.runtime.enrollment import enroll
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Sender
from sequencer.store import prospects as pq
from sequencer.store.models import Event, Prospect, Touch

SECRET = b"smtp-faults-secret-0123456789abcdef"
PROSPECTS = int(os.environ.get("FAULT_PROSPECTS", "200"))
#: The sending policy's default retry budget for temporary failures (sending.max_attempts).
MAX_ATTEMPTS = 5
#: Faults that are the server's temporary refusal: each spends one try of the budget.
COUNTED = ("tempfail-rcpt", "busy-rcpt", "tempfail-data")
#: A reset before DATA: nothing was sent, the mailbox rests, the try is not counted.
RESET_BEFORE_DATA = "drop-before-data"
RESETS = 5
#: The server's words for each fault, as they must show in the touch's last error.
WORDS = {
    "tempfail-rcpt": "451 4.3.0 Temporary failure, please try again later",
    "tempfail-data": "451 4.3.0 Mail server temporarily rejected message",
    "reject-rcpt": "550 5.1.1 The email account that you tried to reach does not exist",
}
#: A second sequence everyone is also in; its email is weeks away, so it is live throughout.
NURTURE = "nurture"
NURTURE_SEQUENCE = f"""\
description: A slow nurture track, live while the faults play out.
schedule:
  timezone: UTC
  days: every day
  hours: "00:00-23:59"
limits:
  min_gap: none
  max_per_week: none
mailbox: [{OWNER}]
steps:
  - id: later
    delay: 60 days
    email: {TEMPLATE}
"""
#: Each move of the clock goes at least this far, so retries due close together go together.
STEP = timedelta(minutes=15)
DRIVE_TIMEOUT = 90.0


class Expect(StrEnum):
    SENT = "sent"
    GAVE_UP = "gave up"
    BOUNCED = "bounced"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Schedule:
    """One recipient's faults, attempt by attempt, and what must become of the touch."""

    faults: tuple[str, ...]
    expect: Expect

    @property
    def attempts(self) -> int:
        """How many times the server must see this recipient: the plan to its end, except a
        budget spent earlier (only counted faults spend it)."""
        if self.expect is Expect.GAVE_UP:
            counted = 0
            for index, fault in enumerate(self.faults):
                counted += fault in COUNTED
                if counted == MAX_ATTEMPTS:
                    return index + 1
            raise AssertionError("a hopeless plan must spend the whole budget")
        return len(self.faults) + (self.expect is Expect.SENT)


def schedule_for(chance: random.Random) -> Schedule:
    """A random but reproducible fate: clean, flaky, hopeless, rejected or lost."""
    prefix = tuple(chance.choice(COUNTED) for _ in range(chance.randint(0, 2)))
    roll = chance.random()
    if roll < 0.35:
        return Schedule((), Expect.SENT)
    if roll < 0.7:
        # Up to three temporary refusals: within the budget of five.
        flaky = tuple(chance.choice(COUNTED) for _ in range(chance.randint(1, 3)))
        return Schedule(flaky, Expect.SENT)
    if roll < 0.8:
        kind = chance.choice(("tempfail-rcpt", "tempfail-data"))
        return Schedule((kind,) * (MAX_ATTEMPTS + 1), Expect.GAVE_UP)
    if roll < 0.9:
        return Schedule((*prefix, "reject-rcpt"), Expect.BOUNCED)
    return Schedule((*prefix, "drop-after-data"), Expect.UNKNOWN)


def with_reset(plan: Schedule, chance: random.Random) -> Schedule:
    """The plan with a reset before DATA somewhere before its last try. A reset spends none
    of the budget (nothing was sent) but rests the whole mailbox for five minutes, so the
    test has only a few of them: each costs every waiting touch of the mailbox a round."""
    faults = list(plan.faults)
    last = len(faults) if plan.expect is Expect.SENT else len(faults) - 1
    faults.insert(chance.randint(0, max(last, 0)), RESET_BEFORE_DATA)
    return Schedule(tuple(faults), plan.expect)


def schedules(emails: list[str], chance: random.Random) -> dict[str, Schedule]:
    plans = {email: schedule_for(chance) for email in emails}
    for email in chance.sample(emails, RESETS):
        plans[email] = with_reset(plans[email], chance)
    return plans


def faults_project(root: Path, port: int) -> Project:
    """One immediate email over both mailboxes (policy `hold` for lost replies), plus the
    nurture sequence; a short SMTP timeout keeps a dead connection cheap."""
    project = one_email_project(root, port, smtp_timeout=2)
    write_sequence(root, NURTURE, NURTURE_SEQUENCE)
    config = yaml.safe_load(project.config_path.read_text())
    assert all(box.get("unknown_outcome", "hold") == "hold" for box in config["mailboxes"])
    # A list this dirty would pause the mailboxes for their bounce rate (tested elsewhere);
    # here that would only stretch the run by days of clock moves.
    config["sending"]["bounce_pause_threshold"] = "90%"
    project.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert NOTE  # the one template both sequences send
    return project


@dataclass(frozen=True)
class Row:
    email: str
    state: str
    last_error: str | None
    message_id: str | None
    attempts: int
    due_at: datetime


async def email_touches(engine: Engine, step: str = "hello") -> list[Row]:
    async with engine.db.transaction() as s:
        result = await s.execute(
            select(
                Prospect.email,
                Touch.state,
                Touch.last_error,
                Touch.message_id,
                Touch.attempts,
                Touch.due_at,
            )
            .join(Prospect, Prospect.id == Touch.prospect_id)
            .where(Touch.step_id == step)
        )
        return [Row(*row) for row in result.all()]


async def drive(engine: Engine, runner: LocalRunner, clock: ManualClock) -> int:
    """Run the runner, and whenever it has nothing left to do now, move the clock to the next
    due touch (at least STEP ahead) and wake it; returns how often the clock moved."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    moves = 0
    deadline = time.monotonic() + DRIVE_TIMEOUT
    try:
        while True:
            assert not task.done(), "the runner stopped by itself"
            await asyncio.sleep(0.02)
            if runner.in_flight:
                continue
            rows = await email_touches(engine)
            assert time.monotonic() < deadline, (
                f"not done within {DRIVE_TIMEOUT} s ({moves} clock moves, now "
                f"{engine.now().isoformat()}): {Counter(r.state for r in rows)}"
            )
            busy = {TouchState.QUEUED.value, TouchState.SENDING.value}
            if any(r.state in busy for r in rows):
                continue
            waiting = [r.due_at for r in rows if r.state == TouchState.SCHEDULED.value]
            if not waiting:
                return moves
            due = min(waiting)
            if due <= engine.now():
                continue  # the dispatcher takes it on its next round
            clock.set(max(due, engine.now() + STEP))
            moves += 1
            runner.dispatcher.wakeup.set()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_faults_under_load_are_retried_bounced_or_held_and_never_sent_twice(
    database_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(1 << 32))
    chance = random.Random(seed)
    emails = [f"p{i:04d}@company{i}.example" for i in range(PROSPECTS)]
    plans = schedules(emails, chance)
    began = time.monotonic()
    with FaultySMTPServer(plan={e: p.faults for e, p in plans.items()}) as server:
        project = faults_project(tmp_path / "project", server.port)
        clock = ManualClock(TUESDAY_10AM)
        async with running_engine(database_url, project, clock=clock) as engine:
            assert engine.catalog.config is not None
            rows = [person(email, line=i + 2, timezone="UTC") for i, email in enumerate(emails)]
            for sequence in (SEQUENCE, NURTURE):
                report = await enroll(engine, sequence, rows, owner=OWNER)
                assert report.enrolled == PROSPECTS, report.skipped[:3]
            boxes = Mailboxes(engine.catalog.config)
            sender = Sender(engine, boxes, secret=SECRET)
            sender.random = random.Random(seed)  # the retry jitter, reproducible too
            runner = LocalRunner(
                engine, sender, concurrency=8, poll=0.05, stale_after=timedelta(days=30)
            )
            try:
                moves = await drive(engine, runner, clock)
            finally:
                await boxes.close()
            touches = {r.email: r for r in await email_touches(engine)}
            nurture = {r.email: r for r in await email_touches(engine, "later")}
            async with engine.db.transaction() as s:
                suppressed = await pq.suppressed(s, emails)
                kinds = Counter(
                    (await s.execute(select(Event.kind).where(Event.kind.in_(["deferred"]))))
                    .scalars()
                    .all()
                )
            stopped = {
                email: [(e.state, e.stop_reason) for e in await enrollments(engine, email)]
                for email in emails
                if plans[email].expect is Expect.BOUNCED
            }
        attempts = Counter(recipient for recipient, _ in server.attempts)
        received = Counter(str(m.parsed["Message-ID"]) for m in server.messages)
        kept = Counter(m.rcpt_tos[0] for m in server.messages)
        lost = Counter(m.rcpt_tos[0] for m in server.messages if m.reply is None)
    seconds = time.monotonic() - began

    fates = Counter(p.expect.value for p in plans.values())
    outcomes = Counter(t.state for t in touches.values())
    print(
        f"\nsmtp faults [{database_url.split(':')[0]}] seed={seed}: prospects={PROSPECTS} "
        f"plans={dict(fates)} outcomes={dict(outcomes)} server attempts={attempts.total()} "
        f"faults={dict(Counter(f for _, f in server.attempts))} deferred events="
        f"{kinds['deferred']} clock moves={moves} seconds={seconds:.1f}"
    )

    # Never twice: no Message-ID reached the server twice, whatever was retried.
    assert [i for i, n in received.items() if n > 1] == []
    assert len(touches) == PROSPECTS
    for email, plan in plans.items():
        touch = touches[email]
        where = f"{email}: plan {plan.faults} ({plan.expect.value})"
        # Each recipient was tried exactly as often as its plan allows: every temporary
        # fault was followed by another try, until success or the end of the budget.
        assert attempts[email] == plan.attempts, (where, attempts[email], touch)
        error = touch.last_error or ""
        if plan.expect is Expect.SENT:
            assert touch.state == "sent", (where, touch)
            assert received[str(touch.message_id)] == 1 and kept[email] == 1, where
        elif plan.expect is Expect.GAVE_UP:
            assert touch.state == "failed", (where, touch)
            assert f"gave up after {MAX_ATTEMPTS} tries" in error, (where, error)
            assert WORDS[plan.faults[-1]] in error, (where, error)
            assert kept[email] == 0, where
        elif plan.expect is Expect.BOUNCED:
            assert touch.state == "failed" and WORDS["reject-rcpt"] in error, (where, touch)
            assert email in suppressed, where
            # Every enrollment of the prospect stopped, the nurture track included.
            assert stopped[email] == [("stopped", "bounced")] * 2, (where, stopped[email])
            assert nurture[email].state == "cancelled", (where, nurture[email])
            assert kept[email] == 0, where
        else:
            # The reply was lost after the content went out: maybe delivered. Held, never
            # tried again (the attempt count above says so), and the server has one copy.
            assert touch.state == "unknown", (where, touch)
            assert lost[email] == 1 and kept[email] == 1, where
            assert email not in suppressed, where
    # Nobody else was suppressed or stopped, and every temporary fault but the last of a spent
    # budget was recorded as a deferral (resets before DATA are not the recipient's doing:
    # they only delay).
    bounced = {e for e, p in plans.items() if p.expect is Expect.BOUNCED}
    assert set(suppressed) == bounced
    assert all(nurture[e].state == "scheduled" for e in emails if e not in bounced)
    counted = sum(1 for _, fault in server.attempts if fault in COUNTED)
    gave_up = sum(1 for p in plans.values() if p.expect is Expect.GAVE_UP)
    assert kinds["deferred"] == counted - gave_up
