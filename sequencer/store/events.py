"""The append-only timeline, and the counts behind `sequencer status`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.states import EventKind, TouchState
from sequencer.store.dialect import execute_many
from sequencer.store.models import Enrollment, Event, Prospect, SequenceRecord, Touch


@dataclass(frozen=True)
class NewEvent:
    prospect_id: int
    kind: EventKind
    at: datetime
    enrollment_id: int | None = None
    touch_id: int | None = None
    data: dict[str, Any] | None = None


async def add_events(session: AsyncSession, events: Sequence[NewEvent]) -> None:
    if not events:
        return
    await execute_many(
        session,
        insert(Event),
        [
            {
                "prospect_id": e.prospect_id,
                "enrollment_id": e.enrollment_id,
                "touch_id": e.touch_id,
                "kind": e.kind.value,
                "at": e.at,
                "data": e.data or {},
            }
            for e in events
        ],
    )


async def timeline(session: AsyncSession, prospect_id: int) -> list[Event]:
    result = await session.execute(
        select(Event).where(Event.prospect_id == prospect_id).order_by(Event.at, Event.id)
    )
    return list(result.scalars())


async def events_after(
    session: AsyncSession, after_id: int, limit: int = 500
) -> list[tuple[Event, str, str | None]]:
    """Events newer than ``after_id``, oldest first, with the prospect's email and the
    enrollment's sequence name: a feed to follow as it grows."""
    result = await session.execute(
        select(Event, Prospect.email, SequenceRecord.name)
        .join(Prospect, Prospect.id == Event.prospect_id)
        .outerjoin(Enrollment, Enrollment.id == Event.enrollment_id)
        .outerjoin(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .where(Event.id > after_id)
        .order_by(Event.id)
        .limit(limit)
    )
    return [(event, email, name) for event, email, name in result.all()]


async def enrollment_counts(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(sequence, state, count) for every sequence that has enrollments."""
    result = await session.execute(
        select(SequenceRecord.name, Enrollment.state, func.count())
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .group_by(SequenceRecord.name, Enrollment.state)
        .order_by(SequenceRecord.name, Enrollment.state)
    )
    return [(name, state, count) for name, state, count in result.all()]


async def touches_due_between(
    session: AsyncSession, start: datetime, end: datetime
) -> list[tuple[str, str, int]]:
    """(sequence, channel, count) of scheduled touches due in ``[start, end)``."""
    result = await session.execute(
        select(SequenceRecord.name, Touch.channel, func.count())
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .where(
            Touch.state == TouchState.SCHEDULED.value,
            Touch.due_at >= start,
            Touch.due_at < end,
        )
        .group_by(SequenceRecord.name, Touch.channel)
        .order_by(SequenceRecord.name, Touch.channel)
    )
    return [(name, channel, count) for name, channel, count in result.all()]


async def overdue_count(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(
        select(func.count()).where(Touch.state == TouchState.SCHEDULED.value, Touch.due_at < before)
    )
    return int(result.scalar_one())


async def touches_needing_attention(
    session: AsyncSession, limit: int = 50
) -> list[tuple[Touch, Prospect, str]]:
    """Touches `failed` or `unknown`: a human has to look at them."""
    result = await session.execute(
        select(Touch, Prospect, SequenceRecord.name)
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .join(Prospect, Prospect.id == Touch.prospect_id)
        .join(SequenceRecord, SequenceRecord.id == Enrollment.sequence_id)
        .where(Touch.state.in_([TouchState.FAILED.value, TouchState.UNKNOWN.value]))
        .order_by(Touch.updated_at.desc())
        .limit(limit)
    )
    return [(touch, prospect, name) for touch, prospect, name in result.all()]
