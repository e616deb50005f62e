"""The engine's state changes: sequence edits, completed touches and tasks, pause, resume, stop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.catalog import Catalog
from sequencer.core.errors import InvalidState, NotFound, SequencerError
from sequencer.core.model import Sequence as SequenceModel
from sequencer.core.scheduling import expiry_time, resume_time
from sequencer.core.sequences import parse_sequence
from sequencer.core.states import (
    ENROLLMENT_LIVE,
    TOUCH_PENDING,
    EnrollmentState,
    EventKind,
    StopReason,
    SuppressionReason,
    TaskOutcome,
    TaskState,
    TouchState,
)
from sequencer.runtime.clock import Clock, SystemClock
from sequencer.runtime.planner import LIMIT_LOOKBACK, Planner
from sequencer.settings import Settings
from sequencer.store import enrollments as eq
from sequencer.store import prospects as pq
from sequencer.store import touches as tq
from sequencer.store.database import Database
from sequencer.store.events import NewEvent, add_events
from sequencer.store.models import Enrollment, Prospect, Touch


@dataclass(frozen=True)
class Changed:
    """What an operation did, for the CLI to report."""

    enrollments: int
    touches_cancelled: int = 0
    detail: str = ""


class Engine:
    """Applies changes to enrollments, each in one transaction, with time from ``clock``."""

    def __init__(
        self,
        database: Database,
        catalog: Catalog,
        *,
        clock: Clock | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.db = database
        self.catalog = catalog
        self.clock = clock or SystemClock()
        self.settings = settings or Settings()
        self.sequences: dict[str, SequenceModel] = dict(catalog.sequences)
        self.planner = Planner(self.sequences, catalog.templates, catalog.config)
        self.sequence_ids: dict[str, int] = {}

    def now(self) -> datetime:
        return self.clock.now()

    # --- sequences ----------------------------------------------------------------------------

    async def sync_sequences(self) -> list[str]:
        """Record the current version of every sequence and apply edits to live enrollments.
        Returns the names of sequences whose content changed since last seen."""
        changed: list[str] = []
        for name, sequence in sorted(self.catalog.sequences.items()):
            source = self.catalog.sources.get(name, "")
            async with self.db.transaction() as s:
                now = self.now()
                version = await eq.record_version(
                    s, name, sequence.content_hash, source, [st.id for st in sequence.steps], now
                )
                self.sequence_ids[name] = version.sequence_id
                if version.created:
                    changed.append(name)
                    await self._apply_edit(
                        s, sequence, version.sequence_id, version.version_id, now
                    )
        return changed

    async def _apply_edit(
        self,
        s: AsyncSession,
        sequence: SequenceModel,
        sequence_id: int,
        version_id: int,
        now: datetime,
    ) -> None:
        """Move live enrollments to the new version: pending touches of removed steps are
        cancelled and the next step planned; done steps are never redone."""
        step_ids = {st.id for st in sequence.steps}
        live = await eq.live_enrollments_of_sequence(s, sequence_id)
        replan: list[tuple[Enrollment, Prospect, datetime]] = []
        prospects = await pq.get_prospects(s, [e.prospect_id for e in live])
        events: list[NewEvent] = []
        for enrollment in live:
            if enrollment.version_id == version_id:
                continue
            await eq.set_version(s, enrollment.id, version_id, now)
            pending = await tq.pending_touches(s, [enrollment.id])
            removed = [t for t in pending if t.step_id not in step_ids]
            events.append(
                NewEvent(
                    enrollment.prospect_id,
                    EventKind.SEQUENCE_CHANGED,
                    now,
                    enrollment.id,
                    data={
                        "sequence": sequence.name,
                        "removed_pending": [t.step_id for t in removed],
                    },
                )
            )
            if removed:
                await self._cancel(s, removed, now, "step removed from the sequence")
            if enrollment.state == EnrollmentState.ACTIVE.value and (removed or not pending):
                history = await tq.touches_of(s, enrollment.id)
                completed = [t.completed_at for t in history if t.completed_at is not None]
                replan.append(
                    (enrollment, prospects[enrollment.prospect_id], max(completed, default=now))
                )
        await add_events(s, events)
        if replan:
            await self.planner.plan(s, sequence, replan, now)

    async def archive(self, name: str) -> Changed:
        """Archive a sequence: stop its live enrollments and cancel their pending touches."""
        async with self.db.transaction() as s:
            record = await eq.sequence_record(s, name)
            if record is None:
                raise NotFound(f"sequence {name!r} has never had enrollments; nothing to archive")
            now = self.now()
            await eq.mark_archived(s, record.id, now)
            live = await eq.live_enrollments_of_sequence(s, record.id)
            cancelled = await self._stop_all(s, live, StopReason.ARCHIVED, now)
            return Changed(len(live), cancelled)

    def sequence_of(self, name: str) -> SequenceModel:
        if name not in self.sequences:
            raise NotFound(f"sequence {name!r} is not in the sequences folder any more")
        return self.sequences[name]

    async def _sequence_for(self, s: AsyncSession, enrollment: Enrollment) -> SequenceModel:
        names = await eq.sequence_names(s, [enrollment.sequence_id])
        name = names[enrollment.sequence_id]
        if name in self.sequences:
            return self.sequences[name]
        # The file is gone: keep going with the version the enrollment was last moved to.
        version = await eq.version_content(s, enrollment.version_id)
        parsed, _ = parse_sequence(name, f"(stored version of {name})", version)
        if parsed is None:
            raise SequencerError(f"sequence {name!r} is missing and its stored copy is unreadable")
        self.sequences[name] = parsed
        return parsed

    # --- touches and tasks ------------------------------------------------------------------

    async def complete_touch(
        self, touch_id: int, state: TouchState = TouchState.SENT, *, at: datetime | None = None
    ) -> Touch | None:
        """Mark a touch done (an email sent, a task finished) and plan the next step from the
        actual completion time. Returns the next touch planned, if any."""
        async with self.db.transaction() as s:
            return await self._complete(s, touch_id, state, at or self.now(), None, None)

    async def _complete(
        self,
        s: AsyncSession,
        touch_id: int,
        state: TouchState,
        at: datetime,
        event_kind: EventKind | None,
        event_data: dict[str, object] | None,
    ) -> Touch | None:
        touch = await tq.get_touch(s, touch_id, lock=True)
        if touch is None:
            raise NotFound(f"no touch {touch_id}")
        if touch.state not in {st.value for st in (*TOUCH_PENDING, TouchState.SENDING)}:
            raise InvalidState(f"touch {touch_id} is already {touch.state}")
        enrollment = await eq.get_enrollment(s, touch.enrollment_id, lock=True)
        assert enrollment is not None
        await tq.set_touch_state(s, [touch.id], state, at, completed=True)
        # A task's touch done directly (not through its task): the task is done with it, so
        # it leaves the rep's list and the expiry sweep never trips over it.
        task = await tq.task_for_touch(s, touch.id)
        if task is not None and task.state == TaskState.OPEN.value:
            await tq.finish_task(s, task.id, TaskState.DONE, at)
        sequence = await self._sequence_for(s, enrollment)
        kind = event_kind or (EventKind.SENT if state is TouchState.SENT else EventKind.TASK_DONE)
        data: dict[str, object] = {
            "step": touch.step_id,
            "attempt": touch.step_index + 1,
            "total": len(sequence.steps),
            "channel": touch.channel,
            "template": touch.template,
            **(event_data or {}),
        }
        await add_events(s, [NewEvent(touch.prospect_id, kind, at, enrollment.id, touch.id, data)])
        if enrollment.state != EnrollmentState.ACTIVE.value:
            return None  # paused: resume plans the next step; ended: nothing more
        prospect = (await pq.get_prospects(s, [enrollment.prospect_id]))[enrollment.prospect_id]
        plans = await self.planner.plan(s, sequence, [(enrollment, prospect, at)], at)
        plan = plans[0]
        if plan.step is None:
            return None
        return await tq.get_touch_for_step(s, enrollment.id, plan.step.id)

    async def settle(
        self, touch_id: int, *, arrived: bool, note: str | None = None
    ) -> Touch | None:
        """A person decided what became of an email whose delivery is `unknown` (they looked in
        the Sent folder, or asked the prospect): ``arrived`` records it sent and the sequence
        moves on; otherwise it goes out again now, with the same Message-ID. Returns the touch
        planned next (arrived) or the touch itself (to be resent)."""
        async with self.db.transaction() as s:
            now = self.now()
            touch = await tq.get_touch(s, touch_id, lock=True)
            if touch is None:
                raise NotFound(
                    f"no touch {touch_id}; `sequencer status` lists those that need a human"
                )
            if touch.state != TouchState.UNKNOWN.value:
                raise InvalidState(
                    f"touch {touch_id} is {touch.state}, not unknown; only an email whose "
                    "delivery is unknown can be settled"
                )
            enrollment = await eq.get_enrollment(s, touch.enrollment_id, lock=True)
            assert enrollment is not None
            if not arrived:
                if enrollment.state != EnrollmentState.ACTIVE.value:
                    raise InvalidState(
                        f"touch {touch_id}'s enrollment is {enrollment.state}; it will not be sent "
                        "again (resume it first, or settle it with --arrived)"
                    )
                await tq.reschedule(s, touch.id, now, now)
                return touch
            confirmed = "by hand" + (f": {note}" if note else "")
            return await self.confirm_sent(s, touch.id, now, {"confirmed": confirmed})

    async def confirm_sent(
        self, s: AsyncSession, touch_id: int, at: datetime, data: dict[str, object]
    ) -> Touch | None:
        """An `unknown` email turned out to have arrived (found in the Sent folder, or a person
        says so): record it sent, with ``data`` on the event, and plan the next step."""
        await tq.set_touch_state(s, [touch_id], TouchState.SENDING, at)
        return await self._complete(s, touch_id, TouchState.SENT, at, EventKind.SENT, data)

    async def complete_task(
        self, task_id: int, outcome: TaskOutcome, note: str | None = None
    ) -> Touch | None:
        """The rep did a task; the sequence moves on from now."""
        async with self.db.transaction() as s:
            task = await tq.get_task(s, task_id, lock=True)
            if task is None:
                raise NotFound(f"no task {task_id}; see `sequencer tasks`")
            if task.state != TaskState.OPEN.value:
                raise InvalidState(f"task {task_id} is already {task.state}")
            now = self.now()
            await tq.finish_task(s, task.id, TaskState.DONE, now, outcome=outcome.value, note=note)
            return await self._complete(
                s,
                task.touch_id,
                TouchState.DONE,
                now,
                EventKind.TASK_DONE,
                {"outcome": outcome.value, "note": note},
            )

    async def expire_tasks(self) -> int:
        """Open tasks left undone past the expiry move on by themselves. Returns how many."""
        now = self.now()
        # The deadline depends on each sequence's calendar (business days), so every overdue
        # open task is a candidate and is decided one by one.
        async with self.db.transaction() as s:
            candidates = await tq.open_tasks_due_before(s, now)
        expired = 0
        for task_id in candidates:
            async with self.db.transaction() as s:
                task = await tq.get_task(s, task_id, lock=True)
                if task is None or task.state != TaskState.OPEN.value:
                    continue
                enrollment = await eq.get_enrollment(s, task.enrollment_id)
                assert enrollment is not None
                sequence = await self._sequence_for(s, enrollment)
                prospect = (await pq.get_prospects(s, [enrollment.prospect_id]))[
                    enrollment.prospect_id
                ]
                deadline = expiry_time(
                    sequence, task.due_at, self.settings.task_expiry, prospect.timezone
                )
                if deadline > now:
                    continue
                await tq.finish_task(s, task.id, TaskState.EXPIRED, now, outcome="expired")
                await self._complete(
                    s,
                    task.touch_id,
                    TouchState.DONE,
                    now,
                    EventKind.TASK_EXPIRED,
                    {"expired_after": str(self.settings.task_expiry)},
                )
                expired += 1
        return expired

    # --- pause, resume, stop ----------------------------------------------------------------

    async def _targets(
        self, s: AsyncSession, email: str, sequence: str | None
    ) -> tuple[Prospect, list[Enrollment]]:
        prospect = await pq.find_prospect(s, email)
        if prospect is None:
            raise NotFound(f"no prospect {email}")
        sequence_id = None
        if sequence is not None:
            record = await eq.sequence_record(s, sequence)
            if record is None:
                raise NotFound(f"{email} was never enrolled in {sequence!r}")
            sequence_id = record.id
        found = await eq.enrollments_of(s, prospect.id, sequence_id=sequence_id, lock=True)
        return prospect, found

    async def pause(
        self,
        email: str,
        *,
        sequence: str | None = None,
        until: datetime | None = None,
        reason: str = "manual",
    ) -> Changed:
        """Pause a prospect's active enrollments (until a time, or until resumed)."""
        async with self.db.transaction() as s:
            prospect, found = await self._targets(s, email, sequence)
            active = [e for e in found if e.state == EnrollmentState.ACTIVE.value]
            if not active:
                raise InvalidState(f"{email} has no active enrollment{_in(sequence)} to pause")
            now = self.now()
            for enrollment in active:
                await eq.set_state(
                    s, enrollment.id, EnrollmentState.PAUSED, now, paused_until=until
                )
            await add_events(
                s,
                [
                    NewEvent(
                        prospect.id,
                        EventKind.PAUSED,
                        now,
                        e.id,
                        data={
                            "until": until.isoformat() if until else None,
                            "reason": reason,
                        },
                    )
                    for e in active
                ],
            )
            return Changed(len(active))

    async def resume(self, email: str, *, sequence: str | None = None) -> Changed:
        async with self.db.transaction() as s:
            prospect, found = await self._targets(s, email, sequence)
            paused = [e for e in found if e.state == EnrollmentState.PAUSED.value]
            if not paused:
                raise InvalidState(f"{email} has no paused enrollment{_in(sequence)} to resume")
            for enrollment in paused:
                await self._resume(s, enrollment, prospect, self.now())
            return Changed(len(paused))

    async def resume_due(self) -> int:
        """Resume enrollments whose pause (e.g. out of office) has run out."""
        now = self.now()
        async with self.db.transaction() as s:
            ids = await eq.paused_until_before(s, now)
        for enrollment_id in ids:
            async with self.db.transaction() as s:
                enrollment = await eq.get_enrollment(s, enrollment_id, lock=True)
                if enrollment is None or enrollment.state != EnrollmentState.PAUSED.value:
                    continue
                prospect = (await pq.get_prospects(s, [enrollment.prospect_id]))[
                    enrollment.prospect_id
                ]
                await self._resume(s, enrollment, prospect, now)
        return len(ids)

    async def _resume(
        self, s: AsyncSession, enrollment: Enrollment, prospect: Prospect, now: datetime
    ) -> None:
        """Active again; the pending touch moves to the next window after now (never a burst),
        or, when none is pending, the next step is planned from now."""
        await eq.set_state(s, enrollment.id, EnrollmentState.ACTIVE, now)
        enrollment.state = EnrollmentState.ACTIVE.value
        sequence = await self._sequence_for(s, enrollment)
        pending = await tq.pending_touches(s, [enrollment.id], lock=True)
        await add_events(s, [NewEvent(prospect.id, EventKind.RESUMED, now, enrollment.id)])
        if not pending:
            await self.planner.plan(s, sequence, [(enrollment, prospect, now)], now)
            return
        previous = (await tq.contact_times(s, [prospect.id], now - LIMIT_LOOKBACK)).get(
            prospect.id, []
        )
        for touch in pending:
            step_ids = [st.id for st in sequence.steps]
            if touch.step_id not in step_ids:
                continue
            step = sequence.steps[step_ids.index(touch.step_id)]
            others = [t for t in previous if abs((t - touch.due_at).total_seconds()) > 1]
            due = resume_time(
                sequence,
                step,
                now=now,
                planned=touch.due_at,
                prospect_timezone=prospect.timezone,
                previous=others,
            )
            await tq.reschedule(s, touch.id, due, now)
            await tq.move_task_due(s, touch.id, due)

    async def stop(
        self, email: str, *, sequence: str | None = None, reason: StopReason = StopReason.MANUAL
    ) -> Changed:
        """Stop a prospect's live enrollments and cancel what was pending, in one transaction."""
        async with self.db.transaction() as s:
            _, found = await self._targets(s, email, sequence)
            live = [e for e in found if e.state in {st.value for st in ENROLLMENT_LIVE}]
            if not live:
                raise InvalidState(f"{email} has no active or paused enrollment{_in(sequence)}")
            cancelled = await self._stop_all(s, live, reason, self.now())
            return Changed(len(live), cancelled)

    async def _stop_all(
        self, s: AsyncSession, enrollments: Sequence[Enrollment], reason: StopReason, now: datetime
    ) -> int:
        pending = await tq.pending_touches(s, [e.id for e in enrollments], lock=True)
        for enrollment in enrollments:
            await eq.set_state(
                s, enrollment.id, EnrollmentState.STOPPED, now, stop_reason=reason.value
            )
        await self._cancel(s, pending, now, f"enrollment stopped: {reason.value}")
        await add_events(
            s,
            [
                NewEvent(e.prospect_id, EventKind.STOPPED, now, e.id, data={"reason": reason.value})
                for e in enrollments
            ],
        )
        return len(pending)

    async def _cancel(
        self, s: AsyncSession, touches: Sequence[Touch], now: datetime, why: str
    ) -> None:
        await tq.set_touch_state(s, [t.id for t in touches], TouchState.CANCELLED, now, error=why)
        await tq.cancel_tasks_of_touches(s, [t.id for t in touches], now)

    async def suppress(
        self,
        value: str,
        *,
        reason: SuppressionReason = SuppressionReason.MANUAL,
        note: str | None = None,
        how: str | None = None,
    ) -> Changed:
        """Never mail this address (or ``@domain``) again; stops every live enrollment it covers.

        ``how`` (e.g. "link") marks the prospect's own request: the first time, their timeline
        says they asked to unsubscribe and how, so nobody mistakes it for a manual stop."""
        value = value.strip().lower()
        async with self.db.transaction() as s:
            now = self.now()
            new = await pq.add_suppression(s, value, reason.value, note, now)
            live: list[Enrollment] = []
            asked: list[NewEvent] = []
            for prospect_id in await pq.prospects_matching(s, value):
                theirs = await eq.enrollments_of(s, prospect_id, live_only=True, lock=True)
                live += theirs
                targets: list[int | None] = [e.id for e in theirs] or [None]
                asked += [
                    NewEvent(prospect_id, EventKind.UNSUBSCRIBED, now, e, data={"how": how})
                    for e in targets
                ]
            if how is not None and new:
                await add_events(s, asked)
            stop_reason = (
                StopReason.UNSUBSCRIBED
                if reason is SuppressionReason.UNSUBSCRIBED
                else (
                    StopReason.BOUNCED
                    if reason is SuppressionReason.BOUNCED
                    else StopReason.SUPPRESSED
                )
            )
            cancelled = await self._stop_all(s, live, stop_reason, now)
            return Changed(len(live), cancelled, "" if new else "already suppressed")


def _in(sequence: str | None) -> str:
    return f" in {sequence}" if sequence else ""
