"""Queries behind `sequencer report`: counts per sequence, step and template, replies by attempt,
leads nobody is working, touches a human must settle. Every figure is a GROUP BY in the
database, so the report reads a few hundred rows whatever the number of enrollments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, case, exists, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from sequencer.core.states import EnrollmentState, EventKind, TaskState, TouchState
from sequencer.store.models import (
    Enrollment,
    Event,
    Prospect,
    SequenceRecord,
    SequenceVersion,
    Task,
    Touch,
)

#: Emails that went out, or may have: a reply can answer any of them.
DELIVERED = [TouchState.SENT.value, TouchState.UNKNOWN.value, TouchState.SENDING.value]
#: A touch in one of these is still going to happen (or is happening right now).
IN_HAND = [TouchState.SCHEDULED.value, TouchState.QUEUED.value, TouchState.SENDING.value]
#: Inbound signals counted once per enrollment (the first one); out-of-office counts each time.
ONCE_PER_ENROLLMENT = [
    EventKind.REPLIED.value,
    EventKind.BOUNCED.value,
    EventKind.UNSUBSCRIBED.value,
]
EVERY_TIME = [EventKind.OUT_OF_OFFICE.value]
NEEDS_A_HUMAN = [TouchState.FAILED.value, TouchState.UNKNOWN.value]

_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class KnownSequence:
    """A sequence that has (or had) enrollments, with its newest list of step ids."""

    id: int
    name: str
    archived_at: datetime | None
    steps: tuple[str, ...]


@dataclass(frozen=True)
class TouchCount:
    sequence: str
    step: str
    step_index: int
    channel: str
    template: str | None
    state: str
    count: int


@dataclass(frozen=True)
class SignalCount:
    """Inbound signals (replied, bounced, unsubscribed, out_of_office) attributed to the touch
    they answer: the one the event names, else the last email that went out before it."""

    sequence: str
    step: str | None  # None: nothing had gone out to that enrollment yet
    template: str | None
    kind: str
    attempt: int | None  # replies only: the ordinal of the email answered (1 = first email)
    count: int


@dataclass(frozen=True)
class IdleLead:
    enrollment_id: int
    email: str
    first_name: str | None
    last_name: str | None
    sequence: str
    state: str
    since: datetime  # when the enrollment last changed
    last_step: str | None
    last_state: str | None


@dataclass(frozen=True)
class StuckTouch:
    touch_id: int
    state: str
    email: str
    sequence: str
    step: str
    channel: str
    error: str | None
    since: datetime
    mailbox: str
    message_id: str | None
    stop_reason: str | None


async def known_sequences(session: AsyncSession) -> list[KnownSequence]:
    """Every sequence the database knows, with the step ids of its newest version."""
    newest = (
        select(SequenceVersion.sequence_id, func.max(SequenceVersion.id).label("id"))
        .group_by(SequenceVersion.sequence_id)
        .subquery()
    )
    result = await session.execute(
        select(
            SequenceRecord.id,
            SequenceRecord.name,
            SequenceRecord.archived_at,
            SequenceVersion.step_ids,
        )
        .outerjoin(newest, newest.c.sequence_id == SequenceRecord.id)
        .outerjoin(SequenceVersion, SequenceVersion.id == newest.c.id)
        .order_by(SequenceRecord.name)
    )
    return [
        KnownSequence(i, name, archived, tuple((steps or {}).get("steps", ())))
        for i, name, archived, steps in result.all()
    ]


def _only(statement: _S, sequence_id: int | None) -> _S:
    """The statement limited to one sequence's enrollments, when one is given."""
    if sequence_id is None:
        return statement
    return statement.where(Enrollment.sequence_id == sequence_id)


async def enrollment_outcomes(
    session: AsyncSession, sequence_id: int | None = None
) -> list[tuple[str, str, str | None, int]]:
    """(sequence, state, stop reason, count) of enrollments."""
    statement = (
        select(SequenceRecord.name, Enrollment.state, Enrollment.stop_reason, func.count())
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .group_by(SequenceRecord.name, Enrollment.state, Enrollment.stop_reason)
    )
    result = await session.execute(_only(statement, sequence_id))
    return [(name, state, reason, count) for name, state, reason, count in result.all()]


async def contacted(session: AsyncSession, sequence_id: int | None = None) -> dict[str, int]:
    """Enrollments per sequence that got at least one email (or may have): the people a
    sequence could have won a reply from."""
    statement = (
        select(SequenceRecord.name, func.count(func.distinct(Touch.enrollment_id)))
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .where(Touch.channel == "email", Touch.state.in_(DELIVERED))
        .group_by(SequenceRecord.name)
    )
    result = await session.execute(_only(statement, sequence_id))
    return {name: count for name, count in result.all()}


async def touch_counts(session: AsyncSession, sequence_id: int | None = None) -> list[TouchCount]:
    """Touches per sequence, step, template and state."""
    statement = (
        select(
            SequenceRecord.name,
            Touch.step_id,
            func.min(Touch.step_index),
            Touch.channel,
            Touch.template,
            Touch.state,
            func.count(),
        )
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .group_by(SequenceRecord.name, Touch.step_id, Touch.channel, Touch.template, Touch.state)
    )
    result = await session.execute(_only(statement, sequence_id))
    return [TouchCount(*row) for row in result.all()]


async def signal_counts(session: AsyncSession, sequence_id: int | None = None) -> list[SignalCount]:
    """Replies, bounces, unsubscribes and out-of-office replies per sequence, step, template
    and (for replies) attempt number."""
    # The events to count, as a table the rest is joined to (an IN list here makes SQLite
    # probe it once per enrollment when a sequence is chosen).
    chosen = union_all(
        select(Event.id.label("id")).where(Event.kind.in_(EVERY_TIME)),
        select(func.min(Event.id))
        .where(Event.kind.in_(ONCE_PER_ENROLLMENT), Event.enrollment_id.is_not(None))
        .group_by(Event.enrollment_id, Event.kind),
    ).cte("chosen")
    earlier = aliased(Touch)
    last_out = (
        select(earlier.id)
        .where(
            earlier.enrollment_id == Event.enrollment_id,
            earlier.channel == "email",
            earlier.state.in_(DELIVERED),
            earlier.completed_at <= Event.at,
        )
        .order_by(earlier.completed_at.desc(), earlier.step_index.desc())
        .limit(1)
        .correlate(Event)
        .scalar_subquery()
    )
    signal = (
        select(
            Event.enrollment_id,
            Event.kind,
            func.coalesce(Event.touch_id, last_out).label("touch_id"),
        )
        .select_from(chosen)
        .join(Event, Event.id == chosen.c.id)
        .cte("signal")
    )
    answered = aliased(Touch)
    before = aliased(Touch)
    ordinal = (
        select(func.count())
        .where(
            before.enrollment_id == answered.enrollment_id,
            before.channel == "email",
            before.state.in_(DELIVERED),
            before.step_index <= answered.step_index,
        )
        .correlate(answered)
        .scalar_subquery()
    )
    attempt = case(
        (and_(signal.c.kind == EventKind.REPLIED.value, answered.id.is_not(None)), ordinal),
        else_=literal(None),
    )
    rows = (
        select(
            SequenceRecord.name.label("sequence"),
            answered.step_id.label("step"),
            answered.template.label("template"),
            signal.c.kind.label("kind"),
            attempt.label("attempt"),
        )
        .select_from(signal)
        .join(Enrollment, Enrollment.id == signal.c.enrollment_id)
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .outerjoin(answered, answered.id == signal.c.touch_id)
    )
    attributed = _only(rows, sequence_id).subquery()
    columns = [attributed.c[name] for name in ("sequence", "step", "template", "kind", "attempt")]
    result = await session.execute(select(*columns, func.count()).group_by(*columns))
    return [SignalCount(r[0], r[1], r[2], r[3], r[4], r[5]) for r in result.all()]


def _idle_filter(now: datetime) -> list[object]:
    """Live enrollments with nothing in hand: no touch to come, no open task, no stop reason.
    A paused enrollment counts only once its pause has run out (it should have resumed)."""
    touch, task = aliased(Touch), aliased(Task)
    in_hand = (
        exists()
        .where(touch.enrollment_id == Enrollment.id, touch.state.in_(IN_HAND))
        .correlate(Enrollment)
    )
    open_task = (
        exists()
        .where(task.enrollment_id == Enrollment.id, task.state == TaskState.OPEN.value)
        .correlate(Enrollment)
    )
    return [
        or_(
            Enrollment.state == EnrollmentState.ACTIVE.value,
            and_(
                Enrollment.state == EnrollmentState.PAUSED.value,
                Enrollment.paused_until.is_not(None),
                Enrollment.paused_until < now,
            ),
        ),
        Enrollment.stop_reason.is_(None),
        SequenceRecord.archived_at.is_(None),
        ~in_hand,
        ~open_task,
    ]


async def idle_leads(
    session: AsyncSession, now: datetime, sequence_id: int | None = None, limit: int = 100
) -> tuple[int, list[IdleLead]]:
    """How many live enrollments nobody is working, and the oldest ``limit`` of them with the
    last touch each had (the clue to why it went quiet)."""
    base = (
        select(Enrollment.id)
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .where(*_idle_filter(now))  # type: ignore[arg-type]
    )
    base = _only(base, sequence_id)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    latest = aliased(Touch)
    last_touch = (
        select(latest.id)
        .where(latest.enrollment_id == Enrollment.id)
        .order_by(latest.step_index.desc(), latest.id.desc())
        .limit(1)
        .correlate(Enrollment)
        .scalar_subquery()
    )
    listed = (
        select(
            Enrollment.id,
            Prospect.email,
            Prospect.first_name,
            Prospect.last_name,
            SequenceRecord.name,
            Enrollment.state,
            Enrollment.updated_at,
            Touch.step_id,
            Touch.state,
        )
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .join(Prospect, Prospect.id == Enrollment.prospect_id)
        .outerjoin(Touch, Touch.id == last_touch)
        .where(*_idle_filter(now))  # type: ignore[arg-type]
        .order_by(Enrollment.updated_at, Enrollment.id)
        .limit(limit)
    )
    result = await session.execute(_only(listed, sequence_id))
    return int(total), [IdleLead(*row) for row in result.all()]


async def stuck_touches(
    session: AsyncSession, sequence_id: int | None = None, limit: int = 100
) -> tuple[dict[str, int], list[StuckTouch]]:
    """Touches `failed` or `unknown`: how many of each, and the newest ``limit``."""
    counted = (
        select(Touch.state, func.count())
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .where(Touch.state.in_(NEEDS_A_HUMAN))
        .group_by(Touch.state)
    )
    totals = {
        state: count for state, count in (await session.execute(_only(counted, sequence_id))).all()
    }
    listed = (
        select(
            Touch.id,
            Touch.state,
            Prospect.email,
            SequenceRecord.name,
            Touch.step_id,
            Touch.channel,
            Touch.last_error,
            Touch.updated_at,
            func.coalesce(Enrollment.mailbox, Enrollment.owner),
            Touch.message_id,
            Enrollment.stop_reason,
        )
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .join(Prospect, Prospect.id == Touch.prospect_id)
        .where(Touch.state.in_(NEEDS_A_HUMAN))
        .order_by(Touch.updated_at.desc(), Touch.id.desc())
        .limit(limit)
    )
    result = await session.execute(_only(listed, sequence_id))
    return totals, [StuckTouch(*row) for row in result.all()]
