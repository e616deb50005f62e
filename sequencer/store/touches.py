"""Queries about touches (the outbox) and the rep tasks some of them carry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.states import TOUCH_PENDING, EnrollmentState, TaskState, TouchState
from sequencer.store.dialect import execute_many, for_update, insert_ignore
from sequencer.store.models import Enrollment, Prospect, Task, Touch

PENDING = [s.value for s in TOUCH_PENDING]
#: Touches that reached the prospect (or are about to): they count for nuisance limits.
CONTACTS = [
    TouchState.SCHEDULED.value,
    TouchState.QUEUED.value,
    TouchState.SENDING.value,
    TouchState.SENT.value,
    TouchState.DONE.value,
]


async def insert_touches_keyed(
    session: AsyncSession, rows: Sequence[dict[str, Any]]
) -> dict[tuple[int, str], int]:
    """Insert touches; the (enrollment, step) unique key makes a repeat a no-op, so a retried
    or concurrent planner can never create a second touch for a step.
    Returns ``(enrollment_id, step_id) -> touch_id`` for the rows that went in."""
    if not rows:
        return {}
    table = Touch.__table__.c
    statement = insert_ignore(session, Touch).returning(
        table.enrollment_id, table.step_id, table.id
    )
    found = await execute_many(session, statement, rows)
    return {(enrollment_id, step_id): touch_id for enrollment_id, step_id, touch_id in found}


async def get_touch(session: AsyncSession, touch_id: int, *, lock: bool = False) -> Touch | None:
    statement = select(Touch).where(Touch.id == touch_id)
    if lock:
        statement = for_update(session, statement)
    return (await session.execute(statement)).scalar_one_or_none()


async def pending_touches(
    session: AsyncSession, enrollment_ids: Iterable[int], *, lock: bool = False
) -> list[Touch]:
    wanted = list(set(enrollment_ids))
    if not wanted:
        return []
    statement = select(Touch).where(Touch.enrollment_id.in_(wanted), Touch.state.in_(PENDING))
    if lock:
        statement = for_update(session, statement)
    return list((await session.execute(statement)).scalars())


async def touches_of(session: AsyncSession, enrollment_id: int) -> list[Touch]:
    result = await session.execute(
        select(Touch).where(Touch.enrollment_id == enrollment_id).order_by(Touch.id)
    )
    return list(result.scalars())


async def set_touch_state(
    session: AsyncSession,
    touch_ids: Iterable[int],
    state: TouchState,
    now: datetime,
    *,
    error: str | None = None,
    completed: bool = False,
) -> None:
    wanted = list(set(touch_ids))
    if not wanted:
        return
    values: dict[str, Any] = {"state": state.value, "updated_at": now}
    if error is not None:
        values["last_error"] = error
    if completed:
        values["completed_at"] = now
    await session.execute(update(Touch).where(Touch.id.in_(wanted)).values(**values))


async def reschedule(session: AsyncSession, touch_id: int, due_at: datetime, now: datetime) -> None:
    await session.execute(
        update(Touch)
        .where(Touch.id == touch_id)
        .values(due_at=due_at, state=TouchState.SCHEDULED.value, updated_at=now)
    )


async def contact_times(
    session: AsyncSession, prospect_ids: Iterable[int], since: datetime
) -> dict[int, list[datetime]]:
    """Times of each prospect's touches since ``since`` (done, sending or planned), in any
    sequence: the nuisance limits count them all."""
    wanted = list(set(prospect_ids))
    if not wanted:
        return {}
    moment = func.coalesce(Touch.completed_at, Touch.due_at)
    result = await session.execute(
        select(Touch.prospect_id, Touch.completed_at, Touch.due_at).where(
            Touch.prospect_id.in_(wanted), Touch.state.in_(CONTACTS), moment >= since
        )
    )
    found: dict[int, list[datetime]] = {}
    for prospect_id, completed_at, due_at in result.all():
        found.setdefault(prospect_id, []).append(completed_at or due_at)
    return found


async def received_templates(session: AsyncSession, prospect_id: int) -> dict[str, datetime]:
    """Templates this prospect received or has planned, with the latest time, any sequence."""
    moment = func.max(func.coalesce(Touch.completed_at, Touch.due_at))
    result = await session.execute(
        select(Touch.template, moment)
        .where(
            Touch.prospect_id == prospect_id,
            Touch.template.is_not(None),
            Touch.state.in_(CONTACTS),
        )
        .group_by(Touch.template)
    )
    return {template: at for template, at in result.all() if template}


async def company_templates(
    session: AsyncSession, domain: str, exclude_prospect: int, since: datetime
) -> dict[str, datetime]:
    """Templates sent (or planned) since ``since`` to other people at the same company."""
    moment = func.max(func.coalesce(Touch.completed_at, Touch.due_at))
    result = await session.execute(
        select(Touch.template, moment)
        .join(Prospect, Prospect.id == Touch.prospect_id)
        .where(
            Prospect.domain == domain,
            Touch.prospect_id != exclude_prospect,
            Touch.template.is_not(None),
            Touch.state.in_(CONTACTS),
            func.coalesce(Touch.completed_at, Touch.due_at) >= since,
        )
        .group_by(Touch.template)
    )
    return {template: at for template, at in result.all() if template}


async def template_usage(session: AsyncSession, templates: Iterable[str]) -> dict[str, int]:
    wanted = list(set(templates))
    if not wanted:
        return {}
    result = await session.execute(
        select(Touch.template, func.count())
        .where(Touch.template.in_(wanted), Touch.state.in_(CONTACTS))
        .group_by(Touch.template)
    )
    return {template: count for template, count in result.all() if template}


async def get_touch_for_step(
    session: AsyncSession, enrollment_id: int, step_id: str
) -> Touch | None:
    result = await session.execute(
        select(Touch).where(Touch.enrollment_id == enrollment_id, Touch.step_id == step_id)
    )
    return result.scalar_one_or_none()


# --- tasks ----------------------------------------------------------------------------------


async def insert_tasks(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await execute_many(session, insert_ignore(session, Task), rows)


async def get_task(session: AsyncSession, task_id: int, *, lock: bool = False) -> Task | None:
    statement = select(Task).where(Task.id == task_id)
    if lock:
        statement = for_update(session, statement)
    return (await session.execute(statement)).scalar_one_or_none()


async def task_for_touch(session: AsyncSession, touch_id: int) -> Task | None:
    result = await session.execute(select(Task).where(Task.touch_id == touch_id))
    return result.scalar_one_or_none()


async def list_tasks(
    session: AsyncSession,
    *,
    owner: str | None = None,
    due_before: datetime | None = None,
    states: Sequence[TaskState] = (TaskState.OPEN,),
) -> list[tuple[Task, Prospect, Enrollment]]:
    statement = (
        select(Task, Prospect, Enrollment)
        .join(Enrollment, Enrollment.id == Task.enrollment_id)
        .join(Prospect, Prospect.id == Enrollment.prospect_id)
        .where(Task.state.in_([s.value for s in states]))
        .order_by(Task.due_at, Task.id)
    )
    if owner is not None:
        statement = statement.where(Task.owner == owner.lower())
    if due_before is not None:
        statement = statement.where(Task.due_at < due_before)
    result = await session.execute(statement)
    return [(task, prospect, enrollment) for task, prospect, enrollment in result.all()]


async def finish_task(
    session: AsyncSession,
    task_id: int,
    state: TaskState,
    now: datetime,
    *,
    outcome: str | None = None,
    note: str | None = None,
) -> None:
    await session.execute(
        update(Task)
        .where(Task.id == task_id)
        .values(state=state.value, outcome=outcome, note=note, completed_at=now)
    )


async def cancel_tasks_of_touches(
    session: AsyncSession, touch_ids: Iterable[int], now: datetime
) -> None:
    wanted = list(set(touch_ids))
    if wanted:
        await session.execute(
            update(Task)
            .where(Task.touch_id.in_(wanted), Task.state == TaskState.OPEN.value)
            .values(state=TaskState.CANCELLED.value, completed_at=now)
        )


async def open_tasks_due_before(session: AsyncSession, cutoff: datetime) -> list[int]:
    """Open tasks whose due time is before ``cutoff`` (candidates to move on by themselves)."""
    result = await session.execute(
        select(Task.id).where(Task.state == TaskState.OPEN.value, Task.due_at < cutoff)
    )
    return list(result.scalars())


async def due_touch_ids(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    """Scheduled touches of active enrollments whose time has come, oldest first (a paused
    enrollment keeps its pending touch, which must not go out)."""
    result = await session.execute(
        select(Touch.id)
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .where(
            Touch.state == TouchState.SCHEDULED.value,
            Touch.due_at <= now,
            Enrollment.state == EnrollmentState.ACTIVE.value,
        )
        .order_by(Touch.due_at)
        .limit(limit)
    )
    return list(result.scalars())


async def move_task_due(session: AsyncSession, touch_id: int, due_at: datetime) -> None:
    await session.execute(
        update(Task)
        .where(Task.touch_id == touch_id, Task.state == TaskState.OPEN.value)
        .values(due_at=due_at)
    )


# --- sending --------------------------------------------------------------------------------


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    """Move due touches of active enrollments to `queued` and return them. On PostgreSQL the
    rows are locked with SKIP LOCKED, so two dispatchers never claim the same touch."""
    statement = (
        select(Touch.id)
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .where(
            Touch.state == TouchState.SCHEDULED.value,
            Touch.channel == "email",
            Touch.due_at <= now,
            Enrollment.state == EnrollmentState.ACTIVE.value,
        )
        .order_by(Touch.due_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(of=Touch, skip_locked=True)
    ids = list((await session.execute(statement)).scalars())
    if ids:
        await session.execute(
            update(Touch)
            .where(Touch.id.in_(ids))
            .values(state=TouchState.QUEUED.value, updated_at=now)
        )
    return ids


async def mailboxes_of(session: AsyncSession, touch_ids: Iterable[int]) -> dict[int, str]:
    """The mailbox each touch is sent from (its enrollment's mailbox, else the owner's)."""
    wanted = list(set(touch_ids))
    if not wanted:
        return {}
    result = await session.execute(
        select(Touch.id, func.coalesce(Enrollment.mailbox, Enrollment.owner))
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .where(Touch.id.in_(wanted))
    )
    return {touch_id: mailbox for touch_id, mailbox in result.all()}


async def touch_for_sending(
    session: AsyncSession, touch_id: int
) -> tuple[Touch, Enrollment, Prospect] | None:
    """A touch with its enrollment and prospect in one round trip; on PostgreSQL the touch
    and enrollment rows are locked (SQLite has one writer at a time instead)."""
    statement = (
        select(Touch, Enrollment, Prospect)
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .join(Prospect, Prospect.id == Touch.prospect_id)
        .where(Touch.id == touch_id)
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(of=[Touch, Enrollment])
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


async def unclaim(session: AsyncSession, touch_ids: Iterable[int], now: datetime) -> None:
    """Claimed touches that were never handed out (the process is stopping) go back to
    `scheduled`; a touch that moved on meanwhile is left as it is."""
    wanted = list(set(touch_ids))
    if wanted:
        await session.execute(
            update(Touch)
            .where(Touch.id.in_(wanted), Touch.state == TouchState.QUEUED.value)
            .values(state=TouchState.SCHEDULED.value, updated_at=now)
        )


async def next_due_at(session: AsyncSession) -> datetime | None:
    """When the earliest scheduled email of an active enrollment is due. Asked on every idle
    poll: ORDER BY ... LIMIT 1 walks the due-time index from its start, where min() over the
    join would read every pending touch."""
    result = await session.execute(
        select(Touch.due_at)
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .where(
            Touch.state == TouchState.SCHEDULED.value,
            Touch.channel == "email",
            Enrollment.state == EnrollmentState.ACTIVE.value,
        )
        .order_by(Touch.due_at)
        .limit(1)
    )
    value = result.scalar_one_or_none()
    return value if isinstance(value, datetime) else None


async def touches_in_state_before(
    session: AsyncSession, state: TouchState, before: datetime
) -> list[int]:
    """Touches stuck in ``state`` since before ``before`` (a worker died holding them)."""
    result = await session.execute(
        select(Touch.id).where(Touch.state == state.value, Touch.updated_at < before)
    )
    return list(result.scalars())


async def mark_sending(
    session: AsyncSession, touch_id: int, message_id: str, template: str | None, now: datetime
) -> None:
    """Written (and committed) before the SMTP conversation starts: after a crash the touch is
    found in `sending` and is never silently sent again."""
    await session.execute(
        update(Touch)
        .where(Touch.id == touch_id)
        .values(
            state=TouchState.SENDING.value,
            message_id=message_id,
            template=template,
            attempts=Touch.attempts + 1,
            updated_at=now,
        )
    )


async def set_attempts(session: AsyncSession, touch_id: int, attempts: int) -> None:
    await session.execute(update(Touch).where(Touch.id == touch_id).values(attempts=attempts))


async def sent_emails(session: AsyncSession, enrollment_id: int) -> list[Touch]:
    """The enrollment's emails that went out (or may have), in step order: its threads."""
    result = await session.execute(
        select(Touch)
        .where(
            Touch.enrollment_id == enrollment_id,
            Touch.channel == "email",
            Touch.message_id.is_not(None),
            Touch.state.in_(
                [TouchState.SENT.value, TouchState.UNKNOWN.value, TouchState.SENDING.value]
            ),
        )
        .order_by(Touch.step_index)
    )
    return list(result.scalars())


async def unknown_between(
    session: AsyncSession, start: datetime, end: datetime
) -> list[tuple[int, str, str]]:
    """(touch id, mailbox, Message-ID) of `unknown` emails settled as unknown in [start, end)."""
    result = await session.execute(
        select(Touch.id, func.coalesce(Enrollment.mailbox, Enrollment.owner), Touch.message_id)
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .where(
            Touch.state == TouchState.UNKNOWN.value,
            Touch.message_id.is_not(None),
            Touch.completed_at >= start,
            Touch.completed_at < end,
        )
    )
    return [(i, m, mid) for i, m, mid in result.all() if mid]
