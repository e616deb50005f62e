"""Queries about sequences (and their versions) and enrollments."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.states import ENROLLMENT_LIVE, EnrollmentState
from sequencer.store.dialect import execute_many, for_update, insert_ignore
from sequencer.store.models import Enrollment, SequenceRecord, SequenceVersion

LIVE = [s.value for s in ENROLLMENT_LIVE]


@dataclass(frozen=True)
class VersionInfo:
    sequence_id: int
    version_id: int
    step_ids: tuple[str, ...]
    created: bool  # a new version was recorded just now
    archived: bool


async def record_version(
    session: AsyncSession,
    name: str,
    content_hash: str,
    content: str,
    step_ids: Sequence[str],
    now: datetime,
) -> VersionInfo:
    """The sequence's row and the version for this content, created when new."""
    await session.execute(insert_ignore(session, SequenceRecord).values(name=name, created_at=now))
    record = (
        await session.execute(select(SequenceRecord).where(SequenceRecord.name == name))
    ).scalar_one()
    result = await session.execute(
        insert_ignore(session, SequenceVersion).values(
            sequence_id=record.id,
            content_hash=content_hash,
            content=content,
            step_ids={"steps": list(step_ids)},
            created_at=now,
        )
    )
    created = bool(getattr(result, "rowcount", 0))
    version = (
        await session.execute(
            select(SequenceVersion).where(
                SequenceVersion.sequence_id == record.id,
                SequenceVersion.content_hash == content_hash,
            )
        )
    ).scalar_one()
    return VersionInfo(
        record.id,
        version.id,
        tuple(version.step_ids["steps"]),
        created,
        record.archived_at is not None,
    )


async def sequence_record(session: AsyncSession, name: str) -> SequenceRecord | None:
    result = await session.execute(select(SequenceRecord).where(SequenceRecord.name == name))
    return result.scalar_one_or_none()


async def sequence_names(session: AsyncSession, ids: Iterable[int]) -> dict[int, str]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    result = await session.execute(
        select(SequenceRecord.id, SequenceRecord.name).where(SequenceRecord.id.in_(wanted))
    )
    return {i: n for i, n in result.all()}


async def sequence_ids(session: AsyncSession, names: Iterable[str]) -> dict[str, int]:
    wanted = list(set(names))
    if not wanted:
        return {}
    result = await session.execute(
        select(SequenceRecord.name, SequenceRecord.id).where(SequenceRecord.name.in_(wanted))
    )
    return {n: i for n, i in result.all()}


async def mark_archived(session: AsyncSession, sequence_id: int, now: datetime) -> None:
    await session.execute(
        update(SequenceRecord).where(SequenceRecord.id == sequence_id).values(archived_at=now)
    )


async def existing_enrollments(
    session: AsyncSession, prospect_ids: Iterable[int], sequence_id: int
) -> dict[int, Enrollment]:
    """Each prospect's most recent enrollment in this sequence, whatever its state."""
    wanted = list(set(prospect_ids))
    if not wanted:
        return {}
    result = await session.execute(
        select(Enrollment)
        .where(Enrollment.prospect_id.in_(wanted), Enrollment.sequence_id == sequence_id)
        .order_by(Enrollment.id)
    )
    return {e.prospect_id: e for e in result.scalars()}


async def live_elsewhere(
    session: AsyncSession, prospect_ids: Iterable[int], sequence_id: int
) -> dict[int, list[int]]:
    """For each prospect: the sequence ids of their live enrollments in other sequences."""
    wanted = list(set(prospect_ids))
    if not wanted:
        return {}
    result = await session.execute(
        select(Enrollment.prospect_id, Enrollment.sequence_id).where(
            Enrollment.prospect_id.in_(wanted),
            Enrollment.sequence_id != sequence_id,
            Enrollment.state.in_(LIVE),
        )
    )
    found: dict[int, list[int]] = {}
    for prospect_id, other in result.all():
        found.setdefault(prospect_id, []).append(other)
    return found


async def insert_enrollments(
    session: AsyncSession, rows: Sequence[dict[str, object]]
) -> dict[int, int]:
    """Insert live enrollments; a prospect already live in the sequence is left alone (the
    partial unique index decides, so concurrent imports cannot both win).
    Returns ``prospect_id -> enrollment_id`` for the rows actually inserted."""
    if not rows:
        return {}
    # One multi-row INSERT: with ON CONFLICT DO NOTHING, RETURNING yields only the rows that
    # went in, on both SQLite and PostgreSQL.
    # In one fixed order, so concurrent imports of overlapping rows cannot deadlock.
    ordered = sorted(rows, key=lambda row: (row["prospect_id"], row["sequence_id"]))
    table = Enrollment.__table__.c
    statement = insert_ignore(session, Enrollment).returning(table.prospect_id, table.id)
    found = await execute_many(session, statement, ordered)
    return {prospect_id: enrollment_id for prospect_id, enrollment_id in found}


async def get_enrollment(
    session: AsyncSession, enrollment_id: int, *, lock: bool = False
) -> Enrollment | None:
    statement = select(Enrollment).where(Enrollment.id == enrollment_id)
    if lock:
        statement = for_update(session, statement)
    return (await session.execute(statement)).scalar_one_or_none()


async def get_enrollments(session: AsyncSession, ids: Iterable[int]) -> dict[int, Enrollment]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    result = await session.execute(select(Enrollment).where(Enrollment.id.in_(wanted)))
    return {e.id: e for e in result.scalars()}


async def enrollments_of(
    session: AsyncSession,
    prospect_id: int,
    *,
    sequence_id: int | None = None,
    live_only: bool = False,
    lock: bool = False,
) -> list[Enrollment]:
    statement = select(Enrollment).where(Enrollment.prospect_id == prospect_id)
    if sequence_id is not None:
        statement = statement.where(Enrollment.sequence_id == sequence_id)
    if live_only:
        statement = statement.where(Enrollment.state.in_(LIVE))
    statement = statement.order_by(Enrollment.id)
    if lock:
        statement = for_update(session, statement)
    return list((await session.execute(statement)).scalars())


async def live_enrollments_of_sequence(session: AsyncSession, sequence_id: int) -> list[Enrollment]:
    result = await session.execute(
        select(Enrollment).where(Enrollment.sequence_id == sequence_id, Enrollment.state.in_(LIVE))
    )
    return list(result.scalars())


async def set_state(
    session: AsyncSession,
    enrollment_id: int,
    state: EnrollmentState,
    now: datetime,
    *,
    stop_reason: str | None = None,
    paused_until: datetime | None = None,
) -> None:
    ended = state not in ENROLLMENT_LIVE
    await session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(
            state=state.value,
            stop_reason=stop_reason,
            paused_until=paused_until,
            updated_at=now,
            ended_at=now if ended else None,
        )
    )


async def set_version(
    session: AsyncSession, enrollment_id: int, version_id: int, now: datetime
) -> None:
    await session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(version_id=version_id, updated_at=now)
    )


async def set_thread(
    session: AsyncSession, enrollment_id: int, subject: str, message_id: str | None
) -> None:
    await session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(thread_subject=subject, thread_message_id=message_id)
    )


async def paused_until_before(session: AsyncSession, now: datetime) -> list[int]:
    """Enrollments paused until a time that has come."""
    result = await session.execute(
        select(Enrollment.id).where(
            Enrollment.state == EnrollmentState.PAUSED.value,
            Enrollment.paused_until.is_not(None),
            Enrollment.paused_until <= now,
        )
    )
    return list(result.scalars())


async def version_content(session: AsyncSession, version_id: int) -> str:
    result = await session.execute(
        select(SequenceVersion.content).where(SequenceVersion.id == version_id)
    )
    return str(result.scalar_one())
