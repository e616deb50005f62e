"""Counts behind ``/metrics``: sends by outcome, inbound mail, suppressions, the queue, and how
long replies waited before they stopped a sequence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.inbound import InboundKind
from sequencer.core.states import EventKind, TaskState, TouchState
from sequencer.store.models import Enrollment, Event, InboundMessage, Suppression, Task, Touch


@dataclass(frozen=True)
class Counts:
    """Totals at one moment; every mapping has a key for every state that has rows."""

    emails: dict[str, int]  # email touches by state
    enrollments: dict[str, int]  # by state
    inbound: dict[str, int]  # inbound messages by kind
    suppressions: dict[str, int]  # by reason
    replies: int  # replies matched to a prospect (timeline events)
    bounces: int  # hard bounces that stopped a sequence (at SMTP time or by a report)
    due: int  # scheduled emails whose time has come, not yet claimed
    open_tasks: int


async def counts(session: AsyncSession, now: datetime) -> Counts:
    emails = await _grouped(
        session, select(Touch.state, func.count()).where(Touch.channel == "email"), Touch.state
    )
    enrollments = await _grouped(session, select(Enrollment.state, func.count()), Enrollment.state)
    inbound = await _grouped(
        session, select(InboundMessage.kind, func.count()), InboundMessage.kind
    )
    suppressions = await _grouped(
        session, select(Suppression.reason, func.count()), Suppression.reason
    )
    events = await _grouped(
        session,
        select(Event.kind, func.count()).where(
            Event.kind.in_([EventKind.REPLIED.value, EventKind.BOUNCED.value])
        ),
        Event.kind,
    )
    due = await session.scalar(
        select(func.count())
        .select_from(Touch)
        .where(
            Touch.channel == "email",
            Touch.state == TouchState.SCHEDULED.value,
            Touch.due_at <= now,
        )
    )
    open_tasks = await session.scalar(
        select(func.count()).select_from(Task).where(Task.state == TaskState.OPEN.value)
    )
    return Counts(
        emails=emails,
        enrollments=enrollments,
        inbound=inbound,
        suppressions=suppressions,
        replies=events.get(EventKind.REPLIED.value, 0),
        bounces=events.get(EventKind.BOUNCED.value, 0),
        due=int(due or 0),
        open_tasks=int(open_tasks or 0),
    )


async def _grouped(session: AsyncSession, statement: Any, column: Any) -> dict[str, int]:
    result = await session.execute(statement.group_by(column))
    return {str(key): int(count) for key, count in result.all()}


async def reply_waits(session: AsyncSession) -> AsyncIterator[float]:
    """Seconds between each matched reply's arrival and its processing (the moment its
    enrollments stopped, in the same transaction), for every reply whose arrival is known.

    Streamed: a scrape reads two columns per reply and keeps nothing."""
    result = await session.stream(
        select(InboundMessage.received_at, InboundMessage.processed_at).where(
            InboundMessage.kind == InboundKind.REPLY.value,
            InboundMessage.enrollment_id.is_not(None),
            InboundMessage.received_at.is_not(None),
        )
    )
    async for row in result:
        received, processed = row[0], row[1]
        if received is not None:
            yield max((processed - received).total_seconds(), 0.0)
