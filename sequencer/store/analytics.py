"""Queries behind `sequencer report`: counts per sequence, step and template, replies by attempt,
leads nobody is working, touches a human must settle. Every figure is a GROUP BY in the
database, so the report reads a few hundred rows whatever the number of enrollments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Select,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from sequencer.core.states import EnrollmentState, EventKind, TaskState, TouchState
from sequencer.store.dialect import dialect_name
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
    sequence: int  # the sequence's id
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

    sequence: int  # the sequence's id
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


async def settle_in(session: AsyncSession) -> None:
    """For the few large queries of a report: PostgreSQL's JIT would spend longer compiling
    each one than it saves (about a second per query on a million enrollments)."""
    if dialect_name(session) == "postgresql":
        await session.execute(text("SET LOCAL jit = off"))


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
) -> list[tuple[int, str, str | None, int]]:
    """(sequence id, state, stop reason, count) of enrollments."""
    statement = select(
        Enrollment.sequence_id, Enrollment.state, Enrollment.stop_reason, func.count()
    ).group_by(Enrollment.sequence_id, Enrollment.state, Enrollment.stop_reason)
    result = await session.execute(_only(statement, sequence_id))
    return [(sequence, state, reason, count) for sequence, state, reason, count in result.all()]


async def contacted(session: AsyncSession, sequence_id: int | None = None) -> dict[int, int]:
    """Enrollments per sequence id that got at least one email (or may have): the people a
    sequence could have won a reply from."""
    emailed = (
        exists()
        .where(
            Touch.enrollment_id == Enrollment.id,
            Touch.channel == "email",
            Touch.state.in_(DELIVERED),
        )
        .correlate(Enrollment)
    )
    statement = (
        select(Enrollment.sequence_id, func.count()).where(emailed).group_by(Enrollment.sequence_id)
    )
    result = await session.execute(_only(statement, sequence_id))
    return {sequence: count for sequence, count in result.all()}


async def touch_counts(session: AsyncSession, sequence_id: int | None = None) -> list[TouchCount]:
    """Touches per sequence id, step, template and state."""
    statement = (
        select(
            Enrollment.sequence_id,
            Touch.step_id,
            func.min(Touch.step_index),
            Touch.channel,
            Touch.template,
            Touch.state,
            func.count(),
        )
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .group_by(Enrollment.sequence_id, Touch.step_id, Touch.channel, Touch.template, Touch.state)
    )
    result = await session.execute(_only(statement, sequence_id))
    return [TouchCount(*row) for row in result.all()]


async def signal_counts(session: AsyncSession, sequence_id: int | None = None) -> list[SignalCount]:
    """Replies, bounces, unsubscribes and out-of-office replies per sequence id, step,
    template and (for replies) attempt number."""
    once = (
        select(
            Event.enrollment_id,
            Event.kind,
            Event.touch_id,
            Event.at,
            func.row_number()
            .over(partition_by=(Event.enrollment_id, Event.kind), order_by=Event.id)
            .label("n"),
        )
        .where(Event.kind.in_(ONCE_PER_ENROLLMENT), Event.enrollment_id.is_not(None))
        .subquery()
    )
    signal = union_all(
        select(Event.enrollment_id, Event.kind, Event.touch_id, Event.at).where(
            Event.kind.in_(EVERY_TIME), Event.enrollment_id.is_not(None)
        ),
        select(once.c.enrollment_id, once.c.kind, once.c.touch_id, once.c.at).where(once.c.n == 1),
    ).subquery()
    earlier = aliased(Touch)
    last_out = (
        select(earlier.id)
        .where(
            earlier.enrollment_id == signal.c.enrollment_id,
            earlier.channel == "email",
            earlier.state.in_(DELIVERED),
            earlier.completed_at <= signal.c.at,
        )
        .order_by(earlier.completed_at.desc(), earlier.step_index.desc())
        .limit(1)
        .correlate(signal)
        .scalar_subquery()
    )
    attributed = select(
        signal.c.enrollment_id,
        signal.c.kind,
        func.coalesce(signal.c.touch_id, last_out).label("touch_id"),
    ).cte("attributed")
    if dialect_name(session) == "postgresql":
        # Computed once, then joined: otherwise PostgreSQL runs the look-up twice per row.
        attributed = attributed.prefix_with("MATERIALIZED")
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
        (and_(attributed.c.kind == EventKind.REPLIED.value, answered.id.is_not(None)), ordinal),
        else_=literal(None),
    )
    rows = (
        select(
            Enrollment.sequence_id.label("sequence"),
            answered.step_id.label("step"),
            answered.template.label("template"),
            attributed.c.kind.label("kind"),
            attempt.label("attempt"),
        )
        .select_from(attributed)
        .join(Enrollment, Enrollment.id == attributed.c.enrollment_id)
        .outerjoin(answered, answered.id == attributed.c.touch_id)
    )
    grouped = _only(rows, sequence_id).subquery()
    columns = [grouped.c[name] for name in ("sequence", "step", "template", "kind", "attempt")]
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
    last touch each had (the clue to why it went quiet). One pass: the total is a window."""
    idle = (
        select(
            Enrollment.id,
            Enrollment.prospect_id,
            Enrollment.sequence_id,
            Enrollment.state,
            Enrollment.updated_at,
        )
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .where(*_idle_filter(now))  # type: ignore[arg-type]
    )
    every = _only(idle, sequence_id).cte("idle")
    if dialect_name(session) == "postgresql":
        # The whole set first (anti-joins by hash): with the LIMIT in view, PostgreSQL
        # would walk every live enrollment in date order probing touches one by one.
        every = every.prefix_with("MATERIALIZED")
    idle_rows = (
        select(every, func.count().over().label("total"))
        .order_by(every.c.updated_at, every.c.id)
        .limit(limit)
        .subquery()
    )
    latest = aliased(Touch)
    last_touch = (
        select(latest.id)
        .where(latest.enrollment_id == idle_rows.c.id)
        .order_by(latest.step_index.desc(), latest.id.desc())
        .limit(1)
        .correlate(idle_rows)
        .scalar_subquery()
    )
    listed = (
        select(
            idle_rows.c.total,
            idle_rows.c.id,
            Prospect.email,
            Prospect.first_name,
            Prospect.last_name,
            SequenceRecord.name,
            idle_rows.c.state,
            idle_rows.c.updated_at,
            Touch.step_id,
            Touch.state,
        )
        .select_from(idle_rows)
        .join(SequenceRecord, SequenceRecord.id == idle_rows.c.sequence_id)
        .join(Prospect, Prospect.id == idle_rows.c.prospect_id)
        .outerjoin(Touch, Touch.id == last_touch)
        .order_by(idle_rows.c.updated_at, idle_rows.c.id)
    )
    rows = (await session.execute(listed)).all()
    total = int(rows[0][0]) if rows else 0
    return total, [IdleLead(*row[1:]) for row in rows]


async def stuck_touches(
    session: AsyncSession, sequence_id: int | None = None, limit: int = 100
) -> list[StuckTouch]:
    """The newest ``limit`` touches `failed` or `unknown` (``touch_counts`` counts them all)."""
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
    return [StuckTouch(*row) for row in result.all()]
