"""Queries about inbound mail: the messages seen, and the watcher's cursor per folder."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, union, update
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.states import ENROLLMENT_LIVE
from sequencer.store.dialect import execute_many, insert_ignore
from sequencer.store.models import (
    Enrollment,
    InboundMessage,
    MailboxCursor,
    Prospect,
    ProspectAlias,
)

#: Values per IN (...) or OR list: well under SQLite's limit of bound parameters.
_CHUNK = 500


async def record_message(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Insert one inbound message; None when (mailbox, folder, UIDVALIDITY, UID) was already
    recorded, so a message seen twice is processed once."""
    result = await session.execute(
        insert_ignore(session, InboundMessage).values(**values).returning(InboundMessage.id)
    )
    row = result.first()
    return int(row[0]) if row else None


async def record_messages(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert many inbound messages in one statement (same keys in every row); any already
    recorded are left as they are."""
    await execute_many(session, insert_ignore(session, InboundMessage), rows)


async def recorded_uids(
    session: AsyncSession, mailbox: str, folder: str, uidvalidity: int, uids: list[int]
) -> set[int]:
    """Those of ``uids`` recorded for this folder and UIDVALIDITY."""
    found: set[int] = set()
    for start in range(0, len(uids), _CHUNK):
        result = await session.execute(
            select(InboundMessage.uid).where(
                InboundMessage.mailbox == mailbox,
                InboundMessage.folder == folder,
                InboundMessage.uidvalidity == uidvalidity,
                InboundMessage.uid.in_(uids[start : start + _CHUNK]),
            )
        )
        found.update(int(uid) for uid in result.scalars())
    return found


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
    for start in range(0, len(wanted), _CHUNK):
        result = await session.execute(
            select(InboundMessage.message_id).where(
                InboundMessage.mailbox == mailbox,
                InboundMessage.message_id.in_(wanted[start : start + _CHUNK]),
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


async def known_addresses(session: AsyncSession, emails: Iterable[str]) -> set[str]:
    """Those of ``emails`` (lowercased) that are a prospect's address or a known alias: mail
    from anyone else cannot match an enrollment by its sender, so it needs no lookup."""
    wanted = sorted({e.lower() for e in emails if e})
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        result = await session.execute(
            union(
                select(Prospect.email).where(Prospect.email.in_(chunk)),
                select(ProspectAlias.email).where(ProspectAlias.email.in_(chunk)),
            )
        )
        found.update(result.scalars())
    return found


async def domains_with_live_enrollments(
    session: AsyncSession, domains: Iterable[str], sequence_ids: Iterable[int]
) -> set[str]:
    """Those of ``domains`` where some prospect has a live enrollment in one of the sequences
    (the question live_enrollments_at_domain answers, asked for many domains at once)."""
    wanted, ids = sorted({d.lower() for d in domains if d}), list(sequence_ids)
    found: set[str] = set()
    if not ids:
        return found
    for start in range(0, len(wanted), 100):
        chunk = wanted[start : start + 100]
        result = await session.execute(
            select(Prospect.email)
            .join(Enrollment, Enrollment.prospect_id == Prospect.id)
            .where(
                or_(*(Prospect.email.like(f"%@{domain}") for domain in chunk)),
                Enrollment.sequence_id.in_(ids),
                Enrollment.state.in_([s.value for s in ENROLLMENT_LIVE]),
            )
        )
        found.update(email.rsplit("@", 1)[-1] for email in result.scalars())
    return found & set(wanted)


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
