"""Queries about mailboxes (health, pauses, send history) and leases on singleton jobs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.states import EnrollmentState, StopReason, TouchState
from sequencer.store.dialect import for_update, insert_ignore
from sequencer.store.models import Enrollment, Lease, MailboxState, Prospect, Touch

DAY = timedelta(hours=24)


async def mailbox_state(
    session: AsyncSession, address: str, now: datetime, *, lock: bool = False
) -> MailboxState:
    """The mailbox's row, created on first use. With ``lock``, sends from one mailbox are
    serialised, so spacing and caps hold across workers."""
    statement = select(MailboxState).where(MailboxState.address == address)
    if lock:
        statement = for_update(session, statement)
    found = (await session.execute(statement)).scalar_one_or_none()
    if found is not None:
        return found
    await session.execute(
        insert_ignore(session, MailboxState).values(address=address, healthy=True, updated_at=now)
    )
    return (await session.execute(statement)).scalar_one()


async def all_mailbox_states(session: AsyncSession) -> list[MailboxState]:
    result = await session.execute(select(MailboxState).order_by(MailboxState.address))
    return list(result.scalars())


async def update_mailbox(
    session: AsyncSession, address: str, now: datetime, **values: object
) -> None:
    await session.execute(
        update(MailboxState).where(MailboxState.address == address).values(updated_at=now, **values)
    )


async def mark_healthy(session: AsyncSession, address: str, now: datetime) -> None:
    """A send went through: a mailbox marked unhealthy is healthy again."""
    await session.execute(
        update(MailboxState)
        .where(MailboxState.address == address, MailboxState.healthy.is_(False))
        .values(healthy=True, status_note=None, updated_at=now)
    )


def _recent_email_sends(*conditions: Any) -> Any:
    moment = func.coalesce(Touch.completed_at, Touch.updated_at)
    return moment, [
        Touch.channel == "email",
        Touch.state.in_(
            [TouchState.SENT.value, TouchState.SENDING.value, TouchState.UNKNOWN.value]
        ),
        *conditions,
    ]


async def mailbox_sends(
    session: AsyncSession, address: str, now: datetime, limit: int | None = None
) -> list[datetime]:
    """When this mailbox sent (or started sending) in the last 24 hours, newest first; with
    ``limit``, only that many (all a rolling cap needs to know)."""
    moment, where = _recent_email_sends(Enrollment.mailbox == address)
    statement = (
        select(moment)
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .where(*where, moment > now - DAY)
        .order_by(moment.desc())
    )
    if limit is not None:
        statement = statement.limit(limit)
    return [row for row in (await session.execute(statement)).scalars() if row is not None]


async def mailbox_send_count(session: AsyncSession, address: str, now: datetime) -> int:
    moment, where = _recent_email_sends(Enrollment.mailbox == address)
    result = await session.execute(
        select(func.count())
        .select_from(Touch)
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .where(*where, moment > now - DAY)
    )
    return int(result.scalar_one())


async def company_sends(
    session: AsyncSession, domain: str, now: datetime, limit: int | None = None
) -> list[datetime]:
    """When anyone at this company was emailed in the last 24 hours, newest first."""
    moment, where = _recent_email_sends(Prospect.domain == domain)
    statement = (
        select(moment)
        .join(Prospect, Prospect.id == Touch.prospect_id)
        .where(*where, moment > now - DAY)
        .order_by(moment.desc())
    )
    if limit is not None:
        statement = statement.limit(limit)
    return [row for row in (await session.execute(statement)).scalars() if row is not None]


async def bounces_since(session: AsyncSession, address: str, since: datetime) -> int:
    result = await session.execute(
        select(func.count()).where(
            Enrollment.mailbox == address,
            Enrollment.state == EnrollmentState.STOPPED.value,
            Enrollment.stop_reason == StopReason.BOUNCED.value,
            Enrollment.ended_at > since,
        )
    )
    return int(result.scalar_one())


# --- leases ---------------------------------------------------------------------------------


async def acquire_lease(
    session: AsyncSession, name: str, holder: str, now: datetime, ttl: timedelta
) -> bool:
    """Take or renew the lease ``name`` for ``holder``; False when someone else holds it."""
    await session.execute(
        insert_ignore(session, Lease).values(name=name, holder=holder, expires_at=now + ttl)
    )
    result = await session.execute(
        update(Lease)
        .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    return bool(getattr(result, "rowcount", 0))


async def release_lease(session: AsyncSession, name: str, holder: str) -> None:
    await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


async def lease_holder(session: AsyncSession, name: str, now: datetime) -> str | None:
    result = await session.execute(
        select(Lease.holder).where(Lease.name == name, Lease.expires_at >= now)
    )
    return result.scalar_one_or_none()
