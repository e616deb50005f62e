"""Queries about inbound mail: the messages seen, and the watcher's cursor per folder."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.states import ENROLLMENT_LIVE
from sequencer.store.dialect import insert_ignore
from sequencer.store.models import Enrollment, InboundMessage, MailboxCursor, Prospect


async def record_message(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Insert one inbound message; None when (mailbox, folder, UIDVALIDITY, UID) was already
    recorded, so a message seen twice is processed once."""
    result = await session.execute(
        insert_ignore(session, InboundMessage).values(**values).returning(InboundMessage.id)
    )
    row = result.first()
    return int(row[0]) if row else None


async def cursor(session: AsyncSession, mailbox: str, folder: str) -> tuple[int, int] | None:
    """(UIDVALIDITY, last UID processed) of a folder, or None before the first message."""
    result = await session.execute(
        select(MailboxCursor.uidvalidity, MailboxCursor.last_uid).where(
            MailboxCursor.mailbox == mailbox, MailboxCursor.folder == folder
        )
    )
    row = result.first()
    return (int(row[0]), int(row[1])) if row else None


async def cursor_moved_at(session: AsyncSession, mailbox: str, folder: str) -> datetime | None:
    """When the folder's cursor last moved (its last message processed), or None."""
    result = await session.execute(
        select(MailboxCursor.updated_at).where(
            MailboxCursor.mailbox == mailbox, MailboxCursor.folder == folder
        )
    )
    return result.scalar_one_or_none()


async def seen_message_ids(session: AsyncSession, mailbox: str, ids: Iterable[str]) -> set[str]:
    """Those of ``ids`` (Message-IDs) that this mailbox has already recorded, in any folder
    and under any UIDVALIDITY."""
    wanted = sorted({i for i in ids if i})
    found: set[str] = set()
    # In chunks: a folder re-scanned after a UIDVALIDITY change can hold thousands.
    for start in range(0, len(wanted), 500):
        result = await session.execute(
            select(InboundMessage.message_id).where(
                InboundMessage.mailbox == mailbox,
                InboundMessage.message_id.in_(wanted[start : start + 500]),
            )
        )
        found.update(value for value in result.scalars() if value)
    return found


async def set_cursor(
    session: AsyncSession, mailbox: str, folder: str, uidvalidity: int, uid: int, now: datetime
) -> None:
    """Move the folder's cursor (only forward within one UIDVALIDITY)."""
    await session.execute(
        insert_ignore(session, MailboxCursor).values(
            mailbox=mailbox, folder=folder, uidvalidity=uidvalidity, last_uid=uid, updated_at=now
        )
    )
    await session.execute(
        update(MailboxCursor)
        .where(
            MailboxCursor.mailbox == mailbox,
            MailboxCursor.folder == folder,
            (MailboxCursor.uidvalidity != uidvalidity) | (MailboxCursor.last_uid < uid),
        )
        .values(uidvalidity=uidvalidity, last_uid=uid, updated_at=now)
    )


async def live_enrollments_by_email(
    session: AsyncSession, email: str, mailbox: str | None = None
) -> list[Enrollment]:
    statement = (
        select(Enrollment)
        .join(Prospect, Prospect.id == Enrollment.prospect_id)
        .where(Prospect.email == email, Enrollment.state.in_([s.value for s in ENROLLMENT_LIVE]))
    )
    if mailbox is not None:
        statement = statement.where(func.coalesce(Enrollment.mailbox, Enrollment.owner) == mailbox)
    return list((await session.execute(statement.order_by(Enrollment.id))).scalars())


async def live_enrollments_at_domain(
    session: AsyncSession, domain: str, sequence_ids: Iterable[int]
) -> list[Enrollment]:
    wanted = list(sequence_ids)
    if not wanted:
        return []
    result = await session.execute(
        select(Enrollment)
        .join(Prospect, Prospect.id == Enrollment.prospect_id)
        .where(
            Prospect.email.like(f"%@{domain}"),
            Enrollment.sequence_id.in_(wanted),
            Enrollment.state.in_([s.value for s in ENROLLMENT_LIVE]),
        )
    )
    return list(result.scalars())


async def transient_bounces(session: AsyncSession, recipient: str, since: datetime) -> int:
    result = await session.execute(
        select(func.count()).where(
            InboundMessage.kind == "bounce",
            InboundMessage.processed_at >= since,
            InboundMessage.details["transient_recipient"].as_string() == recipient,
        )
    )
    return int(result.scalar_one())


async def recent_messages(session: AsyncSession, limit: int = 50) -> list[InboundMessage]:
    result = await session.execute(
        select(InboundMessage).order_by(InboundMessage.id.desc()).limit(limit)
    )
    return list(result.scalars())
