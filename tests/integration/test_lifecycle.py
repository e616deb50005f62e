"""An enrollment's life through the engine: touches done late, rep tasks, pauses, stops,
suppression, archiving, a whole sequence run to its end and a sequence edited mid-flight.
Time is a hand-moved clock, so weeks pass in milliseconds. Every test runs on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from helpers import (
    OWNER,
    TUESDAY_10AM,
    do_next,
    enroll_rows,
    enrollment,
    enrollments,
    events,
    in_window,
    kinds,
    load,
    local,
    make_project,
    move_to,
    next_touch,
    pending,
    people,
    person,
    running_engine,
    task_of,
    touches,
    write_sequence,
)

from sequencer.core.delays import Delay
from sequencer.core.errors import InvalidState, NotFound
from sequencer.core.prospects import ProspectRow
from sequencer.core.states import SuppressionReason, TaskOutcome, TouchState
from sequencer.runtime.clock import ManualClock
from sequencer.runtime.engine import Engine
from sequencer.settings import Settings
from sequencer.store import touches as touch_queries
from sequencer.store import touches as tq
from sequencer.store.database import Database

DANA = "dana@acme.example"
COLD = "cold-outbound"
COLD_STEPS = [
    "intro",
    "call-1",
    "linkedin",
    "value-1",
    "call-2",
    "value-2",
    "new-angle",
    "value-3",
    "value-4",
    "break-up",
]


async def enroll_dana(engine: Engine, sequence: str = COLD) -> None:
    await enroll_rows(engine, sequence, [person(DANA, first_name="Dana", company="Acme")])


async def dana_at_first_call(engine: Engine) -> None:
    """Dana enrolled Tuesday 10:00 and her intro sent at once: the first call is planned for
    Wednesday 10:00 as a task for Ana."""
    await enroll_dana(engine)
    await do_next(engine, DANA)
    call = await next_touch(engine, DANA)
    assert (call.step_id, call.due_at) == ("call-1", local(2025, 3, 5, 10, 0))


# --- completing touches ---------------------------------------------------------------------


async def test_the_next_step_counts_from_when_a_touch_was_really_done(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await enroll_dana(engine)
        intro = await next_touch(engine, DANA)
        assert intro.due_at == TUESDAY_10AM

        # The worker was down for six days: the intro goes out the next Monday at 10:00.
        sent_at = move_to(engine, local(2025, 3, 10, 10, 0))
        call = await engine.complete_touch(intro.id)

        # One business day after the real send, not after the planned one (which would be
        # last Wednesday, already overdue): one touch, in the future, no catching up.
        assert call is not None
        assert (call.step_id, call.due_at) == ("call-1", local(2025, 3, 11, 10, 0))
        assert [t.step_id for t in await pending(engine, DANA)] == ["call-1"]
        sent = [e for e in await events(engine, DANA) if e.kind == "sent"]
        assert [(e.at, e.data["step"]) for e in sent] == [(sent_at, "intro")]

        # The rep makes the call ten days late: LinkedIn is two business days after that.
        move_to(engine, local(2025, 3, 21, 14, 0))
        await engine.complete_task((await task_of(engine, call)).id, TaskOutcome.NO_ANSWER)
        linkedin = await next_touch(engine, DANA)
        assert (linkedin.step_id, linkedin.due_at) == ("linkedin", local(2025, 3, 25, 14, 0))


async def test_a_touch_can_only_be_completed_once(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await enroll_dana(engine)
        intro = await next_touch(engine, DANA)
        await engine.complete_touch(intro.id)
        with pytest.raises(InvalidState, match="already sent"):
            await engine.complete_touch(intro.id)
        with pytest.raises(NotFound):
            await engine.complete_touch(intro.id + 1000)
        assert [t.step_id for t in await touches(engine, DANA)] == ["intro", "call-1"]


# --- rep tasks ------------------------------------------------------------------------------


async def test_a_task_step_gives_the_rep_a_script_and_moves_on_when_done(
    database_url: str,
) -> None:
    async with running_engine(database_url) as engine:
        await dana_at_first_call(engine)
        async with engine.db.transaction() as s:
            listed = await touch_queries.list_tasks(s, owner=OWNER)
            assert await touch_queries.list_tasks(s, owner="someone@northwind.example") == []
        assert len(listed) == 1
        task, who, _ = listed[0]
        assert (task.channel, task.state, task.owner, who.email) == ("call", "open", OWNER, DANA)
        assert task.title == "Call Dana at Acme"
        assert task.due_at == local(2025, 3, 5, 10, 0)
        assert "Hi Dana, it's Ana from Northwind Analytics" in task.script
        assert "{{" not in task.script

        move_to(engine, local(2025, 3, 5, 11, 15))
        linkedin = await engine.complete_task(task.id, TaskOutcome.CONNECTED, note="call me in May")

        assert linkedin is not None
        assert (linkedin.step_id, linkedin.due_at) == ("linkedin", local(2025, 3, 7, 11, 15))
        done = await task_of(engine, (await touches(engine, DANA))[1])
        assert (done.state, done.outcome, done.note) == ("done", "connected", "call me in May")
        assert done.completed_at == local(2025, 3, 5, 11, 15)
        new_task = await task_of(engine, linkedin)
        assert new_task.title == "Connect with Dana on LinkedIn"
        assert '"Hi Dana, I work with ops and logistics teams' in new_task.script
        with pytest.raises(InvalidState, match="already done"):
            await engine.complete_task(task.id, TaskOutcome.CONNECTED)

        timeline = await events(engine, DANA)
        assert [e.kind for e in timeline] == [
            "enrolled",
            "sent",
            "task_created",
            "task_done",
            "task_created",
        ]
        assert timeline[3].data["outcome"] == "connected"
        assert (timeline[2].data["attempt"], timeline[2].data["total"]) == (2, 10)


async def test_an_undone_task_moves_on_by_itself_after_the_expiry(database_url: str) -> None:
    settings = Settings(task_expiry=Delay.parse("2 days"))
    async with running_engine(database_url, settings=settings) as engine:
        await dana_at_first_call(engine)
        call = await next_touch(engine, DANA)

        # Due Wednesday 10:00; two days later, Friday 10:00, is the deadline.
        move_to(engine, local(2025, 3, 7, 9, 59))
        assert await engine.expire_tasks() == 0
        assert (await task_of(engine, call)).state == "open"
        assert [t.step_id for t in await pending(engine, DANA)] == ["call-1"]

        expired_at = move_to(engine, local(2025, 3, 7, 10, 0))
        assert await engine.expire_tasks() == 1
        task = await task_of(engine, call)
        assert (task.state, task.outcome, task.completed_at) == ("expired", "expired", expired_at)
        linkedin = await next_touch(engine, DANA)
        # Planned from the moment it expired: two business days after Friday 10:00.
        assert (linkedin.step_id, linkedin.due_at) == ("linkedin", local(2025, 3, 11, 10, 0))
        assert (await task_of(engine, linkedin)).state == "open"
        assert await engine.expire_tasks() == 0
        assert (await kinds(engine, DANA))[-2:] == ["task_expired", "task_created"]
        with pytest.raises(InvalidState, match="already expired"):
            await engine.complete_task(task.id, TaskOutcome.CONNECTED)


# --- pause and resume -----------------------------------------------------------------------


async def test_resume_after_a_long_pause_plans_the_next_window_after_now(
    database_url: str,
) -> None:
    async with running_engine(database_url) as engine:
        await dana_at_first_call(engine)
        call = await next_touch(engine, DANA)
        move_to(engine, local(2025, 3, 4, 12, 0))
        assert (await engine.pause(DANA)).enrollments == 1
        assert (await enrollment(engine, DANA)).state == "paused"
        with pytest.raises(InvalidState, match="no active enrollment"):
            await engine.pause(DANA)

        # Ten days later, on Friday evening (after the window): Monday's opening, not the
        # long-gone Wednesday and not the past.
        resumed_at = move_to(engine, local(2025, 3, 14, 18, 0))
        assert (await engine.resume(DANA)).enrollments == 1

        after = await next_touch(engine, DANA)
        assert after.id == call.id
        assert after.due_at == local(2025, 3, 17, 8, 30)
        assert after.due_at > resumed_at
        assert (await task_of(engine, after)).due_at == after.due_at
        assert (await enrollment(engine, DANA)).state == "active"
        assert (await kinds(engine, DANA))[-2:] == ["paused", "resumed"]
        with pytest.raises(InvalidState, match="no paused enrollment"):
            await engine.resume(DANA)


async def test_a_short_pause_keeps_the_planned_time(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await dana_at_first_call(engine)
        move_to(engine, local(2025, 3, 4, 12, 0))
        await engine.pause(DANA)
        move_to(engine, local(2025, 3, 4, 13, 0))
        await engine.resume(DANA)
        # Resuming never pulls a touch earlier than it was planned.
        assert (await next_touch(engine, DANA)).due_at == local(2025, 3, 5, 10, 0)


async def test_a_pause_until_a_date_ends_by_itself(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await dana_at_first_call(engine)
        back = local(2025, 3, 10, 9, 0)
        await engine.pause(DANA, until=back, reason="out of office")

        move_to(engine, back - timedelta(minutes=1))
        assert await engine.resume_due() == 0
        assert (await enrollment(engine, DANA)).state == "paused"

        move_to(engine, back)
        assert await engine.resume_due() == 1
        current = await enrollment(engine, DANA)
        assert (current.state, current.paused_until) == ("active", None)
        call = await next_touch(engine, DANA)
        assert (call.step_id, call.due_at) == ("call-1", back)
        assert await engine.resume_due() == 0
        paused = [e for e in await events(engine, DANA) if e.kind == "paused"]
        assert paused[0].data == {"until": back.isoformat(), "reason": "out of office"}


# --- stopping -------------------------------------------------------------------------------


async def test_stop_cancels_pending_touches_and_open_tasks(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await dana_at_first_call(engine)
        call = await next_touch(engine, DANA)
        task = await task_of(engine, call)
        stopped_at = move_to(engine, local(2025, 3, 4, 15, 0))

        changed = await engine.stop(DANA)

        assert (changed.enrollments, changed.touches_cancelled) == (1, 1)
        current = await enrollment(engine, DANA)
        assert (current.state, current.stop_reason, current.ended_at) == (
            "stopped",
            "manual",
            stopped_at,
        )
        assert [(t.step_id, t.state) for t in await touches(engine, DANA)] == [
            ("intro", "sent"),
            ("call-1", "cancelled"),
        ]
        assert (await task_of(engine, call)).state == "cancelled"
        with pytest.raises(InvalidState, match="already cancelled"):
            await engine.complete_touch(call.id)
        with pytest.raises(InvalidState, match="already cancelled"):
            await engine.complete_task(task.id, TaskOutcome.CONNECTED)
        for action in (engine.stop, engine.resume, engine.pause):
            with pytest.raises(InvalidState):
                await action(DANA)
        assert await pending(engine, DANA) == []
        assert (await kinds(engine, DANA))[-1] == "stopped"


async def test_a_stop_that_fails_halfway_changes_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_engine(database_url) as engine:
        await dana_at_first_call(engine)
        call = await next_touch(engine, DANA)

        async def fail(*args: object) -> None:
            raise RuntimeError("connection lost while cancelling tasks")

        # The last write of a stop fails: the enrollment's state and the touches, written
        # before it in the same transaction, must not be left stopped and cancelled.
        monkeypatch.setattr(touch_queries, "cancel_tasks_of_touches", fail)
        with pytest.raises(RuntimeError):
            await engine.stop(DANA)
        monkeypatch.undo()

        assert (await enrollment(engine, DANA)).state == "active"
        assert (await next_touch(engine, DANA)).id == call.id
        assert (await task_of(engine, call)).state == "open"
        assert "stopped" not in await kinds(engine, DANA)


async def test_suppressing_a_domain_stops_everyone_there(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await enroll_rows(
            engine, COLD, people("dana@acme.example", "kai@acme.example", "lee@globex.example")
        )
        await enroll_rows(engine, "post-sale-thank-you", people("kai@acme.example"))

        changed = await engine.suppress("@ACME.example")

        assert (changed.enrollments, changed.touches_cancelled) == (3, 3)
        for email in ("dana@acme.example", "kai@acme.example"):
            for each in await enrollments(engine, email):
                assert (each.state, each.stop_reason) == ("stopped", "suppressed")
            assert await pending(engine, email) == []
        assert (await enrollment(engine, "lee@globex.example")).state == "active"
        assert (await engine.suppress("@acme.example")).detail == "already suppressed"

        late = await enroll_rows(engine, COLD, people("new@acme.example"), expect_all=False)
        assert [r.reason for r in late.skipped] == ["suppressed: @acme.example (manual)"]

        await engine.suppress("lee@globex.example", reason=SuppressionReason.UNSUBSCRIBED)
        lee = await enrollment(engine, "lee@globex.example")
        assert (lee.state, lee.stop_reason) == ("stopped", "unsubscribed")


async def test_archiving_a_sequence_stops_its_enrollments(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await enroll_rows(engine, COLD, people("dana@acme.example", "kai@acme.example"))
        await enroll_rows(engine, "post-sale-thank-you", people("lee@globex.example"))
        await do_next(engine, "dana@acme.example")  # Dana is at her first call task

        changed = await engine.archive(COLD)

        assert (changed.enrollments, changed.touches_cancelled) == (2, 2)
        for email in ("dana@acme.example", "kai@acme.example"):
            current = await enrollment(engine, email)
            assert (current.state, current.stop_reason) == ("stopped", "archived")
            assert await pending(engine, email) == []
        call = (await touches(engine, "dana@acme.example"))[1]
        assert (await task_of(engine, call)).state == "cancelled"
        assert (await enrollment(engine, "lee@globex.example")).state == "active"
        with pytest.raises(InvalidState, match="archived"):
            await enroll_rows(engine, COLD, people("new@acme.example"))
        with pytest.raises(NotFound):
            await engine.archive("no-such-sequence")
    # A restart does not bring it back.
    async with running_engine(database_url) as engine:
        with pytest.raises(InvalidState, match="archived"):
            await enroll_rows(engine, COLD, people("new@acme.example"))


# --- a whole run ----------------------------------------------------------------------------


async def test_cold_outbound_runs_to_the_end(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await enroll_dana(engine)
        done = [await do_next(engine, DANA) for _ in COLD_STEPS]

        assert await pending(engine, DANA) == []
        current = await enrollment(engine, DANA)
        assert (current.state, current.ended_at) == ("finished", done[-1].due_at)

        every = await touches(engine, DANA)
        assert [t.step_id for t in every] == COLD_STEPS
        channels = {"call-1": "call", "call-2": "call", "linkedin": "linkedin"}
        for touch in every:
            expected = "done" if touch.step_id in channels else "sent"
            assert (touch.state, touch.channel) == (
                expected,
                channels.get(touch.step_id, "email"),
            )
            assert in_window(touch.due_at), (touch.step_id, touch.due_at)
        # The four value-add emails are four different templates, and no template repeats.
        value_adds = [t.template for t in every if t.step_id.startswith("value-")]
        assert len(set(value_adds)) == 4
        assert all(name and name.startswith("value-") for name in value_adds)
        sent = [t.template for t in every if t.template]
        assert len(sent) == len(set(sent))
        # Never nags: at least a day apart, at most three in any week.
        times = [t.completed_at or TUESDAY_10AM for t in every]
        assert all(t.completed_at for t in every)
        assert min(b - a for a, b in pairwise(times)) >= timedelta(days=1)
        for index, start in enumerate(times):
            week = [t for t in times[index:] if t - start < timedelta(days=7)]
            assert len(week) <= 3
        assert done[-1].due_at - TUESDAY_10AM < timedelta(weeks=6)

        timeline = await kinds(engine, DANA)
        assert timeline[0] == "enrolled"
        assert timeline[-1] == "finished"
        assert (timeline.count("sent"), timeline.count("task_created")) == (7, 3)
        assert timeline.count("task_done") == 3

        # Finished means finished: nothing can be redone, and a re-import does not restart it.
        with pytest.raises(InvalidState):
            await engine.complete_touch(every[-1].id)
        again = await enroll_rows(engine, COLD, [person(DANA)], expect_all=False)
        assert [r.reason for r in again.skipped] == ["already enrolled: finished in this sequence"]


# --- editing a sequence mid-flight ----------------------------------------------------------

EDIT_V1 = """\
description: A short sequence that gets edited while prospects are in it.
schedule:
  timezone: prospect
  fallback_timezone: America/New_York
  days: weekdays
  hours: "09:00-17:00"
steps:
  - id: first
    delay: immediately
    email: cold-intro
  - id: second
    delay: 2 business days
    email: value-benchmark-report
  - id: third
    delay: 2 business days
    email: value-peer-question
  - id: fourth
    delay: 2 business days
    email: cold-new-angle
"""

EDIT_V2 = """\
description: The same sequence, edited.
schedule:
  timezone: prospect
  fallback_timezone: America/New_York
  days: weekdays
  hours: "09:00-17:00"
steps:
  - id: welcome
    delay: immediately
    email: customer-thank-you
  - id: first
    delay: immediately
    email: cold-intro
  - id: second
    delay: 2 business days
    email: value-benchmark-report
  - id: fourth
    delay: 2 business days
    email: cold-new-angle
  - id: last-word
    delay: 3 business days
    email: cold-break-up
"""


async def test_editing_a_sequence_mid_flight(database_url: str, tmp_path: Path) -> None:
    root = tmp_path / "project"
    project = make_project(root, {"edited": EDIT_V1}, examples=False)
    clock = ManualClock(TUESDAY_10AM)
    dana, kai, lee = "dana@acme.example", "kai@acme.example", "lee@globex.example"
    async with running_engine(database_url, project, clock=clock) as engine:
        await enroll_rows(engine, "edited", people(dana, kai, lee))
        for email in (dana, kai):
            await do_next(engine, email)  # first, Tuesday 10:00
        for email in (dana, kai, lee):
            await do_next(engine, email)  # second for Dana and Kai (Thursday); first for Lee
        dana_second = (await touches(engine, dana))[1]
        assert dana_second.completed_at == local(2025, 3, 6, 10, 0)
        third = await next_touch(engine, dana)
        assert (third.step_id, third.due_at) == ("third", local(2025, 3, 10, 10, 0))
        lee_second = await next_touch(engine, lee)
        assert lee_second.step_id == "second"
        move_to(engine, local(2025, 3, 7, 11, 0))
        await engine.pause(kai)

    # Friday noon: "third" is removed, "welcome" inserted at the start, "last-word" added.
    clock.set(local(2025, 3, 7, 12, 0))
    write_sequence(root, "edited", EDIT_V2)
    database = Database(database_url)
    try:
        engine = Engine(database, load(project), clock=clock)
        assert await engine.sync_sequences() == ["edited"]

        # Dana: the removed step's touch is cancelled and the next existing step is planned
        # from her last real touch (Thursday 10:00 + 2 business days).
        dana_touches = await touches(engine, dana)
        assert [(t.step_id, t.state) for t in dana_touches] == [
            ("first", "sent"),
            ("second", "sent"),
            ("third", "cancelled"),
            ("fourth", "scheduled"),
        ]
        assert dana_touches[2].last_error == "step removed from the sequence"
        assert dana_touches[3].due_at == local(2025, 3, 10, 10, 0)
        # Lee's pending step still exists: left exactly as it was.
        kept = await next_touch(engine, lee)
        assert (kept.id, kept.due_at) == (lee_second.id, lee_second.due_at)
        # Kai is paused: the removed step is cancelled and nothing new planned until resumed.
        assert [(t.step_id, t.state) for t in await touches(engine, kai)][2:] == [
            ("third", "cancelled")
        ]
        assert await pending(engine, kai) == []

        # Loading the same files again changes nothing.
        assert await engine.sync_sequences() == []

        await do_next(engine, dana)  # fourth, Monday 10:00
        # Kai, resumed on Monday at noon, goes on with the next step that still exists.
        resumed_at = move_to(engine, local(2025, 3, 10, 12, 0))
        await engine.resume(kai)
        fourth = await next_touch(engine, kai)
        assert (fourth.step_id, fourth.due_at) == ("fourth", local(2025, 3, 12, 12, 0))
        assert fourth.due_at > resumed_at

        last_word = await do_next(engine, dana)  # the step added at the end
        assert (last_word.step_id, last_word.due_at) == ("last-word", local(2025, 3, 13, 10, 0))
        assert (await enrollment(engine, dana)).state == "finished"
        steps = [(t.step_id, t.state) for t in await touches(engine, dana)]
        assert steps == [
            ("first", "sent"),
            ("second", "sent"),
            ("third", "cancelled"),
            ("fourth", "sent"),
            ("last-word", "sent"),
        ]
        assert await kinds(engine, dana) == [
            "enrolled",
            "sent",
            "sent",
            "sequence_changed",
            "sent",
            "sent",
            "finished",
        ]
        changed = [e for e in await events(engine, dana) if e.kind == "sequence_changed"]
        assert changed[0].data == {"sequence": "edited", "removed_pending": ["third"]}

        # Lee finishes the edited sequence: the new first step is in his past, never sent.
        while (await enrollment(engine, lee)).state == "active":
            await do_next(engine, lee)
        lee_steps = [t.step_id for t in await touches(engine, lee)]
        assert lee_steps == ["first", "second", "fourth", "last-word"]
        for email in (dana, kai, lee):
            assert "welcome" not in [t.step_id for t in await touches(engine, email)]
    finally:
        await database.close()


# --- never repeats itself -------------------------------------------------------------------

ONE_EMAIL = """\
description: A single email.
steps:
  - id: only
    delay: immediately
    email: {template}
"""

NURTURE = """\
description: Two ideas from a small pool, then a close.
pools:
  ideas:
    templates: [value-peer-question, value-benchmark-report]
    when_exhausted: skip
steps:
  - id: idea
    delay: immediately
    email: {rotate: ideas}
  - id: another-idea
    delay: 2 business days
    email: {rotate: ideas}
  - id: close
    delay: 2 business days
    email: cold-break-up
"""


async def test_a_rotating_step_never_repeats_what_the_prospect_got_elsewhere(
    database_url: str, tmp_path: Path
) -> None:
    project = make_project(
        tmp_path / "project",
        {
            "peer-question": ONE_EMAIL.format(template="value-peer-question"),
            "benchmark-blast": ONE_EMAIL.format(template="value-benchmark-report"),
            "nurture": NURTURE,
        },
        examples=False,
    )
    async with running_engine(database_url, project) as engine:
        # Dana got the peer question in another sequence; the benchmark went to many others,
        # so it is the most used template of the pool.
        await enroll_rows(engine, "peer-question", [person(DANA)])
        await do_next(engine, DANA)
        await enroll_rows(
            engine, "benchmark-blast", people("a@one.example", "b@two.example", "c@three.example")
        )

        await enroll_rows(engine, "nurture", [person(DANA)])
        idea = await next_touch(engine, DANA)
        assert (idea.step_id, idea.template) == ("idea", "value-benchmark-report")

        # The pool has nothing new left for her: the second idea is skipped, not repeated.
        await do_next(engine, DANA)
        nurture = await enrollment(engine, DANA, "nurture")
        async with engine.db.transaction() as s:
            steps = [
                (t.step_id, t.state, t.template)
                for t in await touch_queries.touches_of(s, nurture.id)
            ]
        assert steps == [
            ("idea", "sent", "value-benchmark-report"),
            ("another-idea", "skipped", None),
            ("close", "scheduled", "cold-break-up"),
        ]
        skipped = [e for e in await events(engine, DANA) if e.kind == "skipped"]
        assert [e.data["step"] for e in skipped] == ["another-idea"]


async def test_completing_a_task_touch_directly_closes_its_task(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await dana_at_first_call(engine)
        call = await next_touch(engine, DANA)
        move_to(engine, local(2025, 3, 5, 10, 30))
        linkedin = await engine.complete_touch(call.id, TouchState.DONE)
        assert linkedin is not None and linkedin.step_id == "linkedin"
        # The rep's list no longer shows the call, and the expiry sweep later finds nothing
        # wrong with it.
        assert (await task_of(engine, call)).state == "done"
        move_to(engine, local(2025, 3, 20, 10, 0))
        assert await engine.expire_tasks() == 1  # only the LinkedIn task
        assert (await next_touch(engine, DANA)).step_id == "value-1"


async def test_a_paused_enrollment_has_nothing_due(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        await enroll_rows(engine, COLD, people("dana@acme.example", "lee@globex.example"))
        later = move_to(engine, local(2025, 3, 20, 10, 0))
        async with engine.db.transaction() as s:
            assert len(await tq.due_touch_ids(s, later, 10)) == 2
        await engine.pause("dana@acme.example")
        async with engine.db.transaction() as s:
            due = await tq.due_touch_ids(s, later, 10)
        assert due == [(await next_touch(engine, "lee@globex.example")).id]


async def test_a_domain_suppression_means_the_email_domain_everywhere(database_url: str) -> None:
    async with running_engine(database_url) as engine:
        # Pat writes from a free-mail address but works at acme.example.
        pat = ProspectRow(2, "pat@gmail.example", {"company": "Acme", "domain": "acme.example"})
        await enroll_rows(engine, COLD, [pat, *people("dana@acme.example", line_start=3)])
        changed = await engine.suppress("@acme.example")
        assert changed.enrollments == 1
        assert (await enrollment(engine, "pat@gmail.example")).state == "active"
        # Enrollment applies the same rule: Pat could be enrolled, Dana could not.
        report = await enroll_rows(
            engine,
            "post-sale-thank-you",
            [pat, *people("dana@acme.example", line_start=3)],
            expect_all=False,
        )
        assert report.enrolled == 1
        assert [r.email for r in report.skipped] == ["dana@acme.example"]
