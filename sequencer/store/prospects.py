"""Queries about prospects and the suppression list."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.store.dialect import execute_many, insert_ignore
from sequencer.store.models import Prospect, ProspectAlias, Suppression

#: Columns of their own; every other field goes into ``Prospect.fields``.
COLUMNS = ("first_name", "last_name", "company", "title", "timezone", "domain")


def split_fields(fields: Mapping[str, str]) -> tuple[dict[str, str | None], dict[str, str]]:
    """(column values, other fields) for a prospect's fields."""
    columns: dict[str, str | None] = {c: fields.get(c) or None for c in COLUMNS}
    extra = {k: v for k, v in fields.items() if k not in COLUMNS and k != "email" and v}
    return columns, extra


def prospect_fields(prospect: Prospect) -> dict[str, str]:
    """Every field of a prospect as templates see them (missing ones absent)."""
    fields: dict[str, str] = {"email": prospect.email}
    for column in COLUMNS:
        value = getattr(prospect, column)
        if value:
            fields[column] = value
    for key, value in (prospect.fields or {}).items():
        if value not in (None, "") and key not in fields:
            fields[key] = str(value)
    return fields


async def upsert_prospects(
    session: AsyncSession, rows: Sequence[tuple[str, Mapping[str, str]]], now: datetime
) -> dict[str, int]:
    """Create the prospects that are new and merge non-empty fields into existing ones.
    Returns ``email -> id``. Safe under concurrent imports: the unique email decides."""
    if not rows:
        return {}
    merged: dict[str, dict[str, str]] = {}
    for email, fields in rows:
        merged.setdefault(email, {}).update({k: v for k, v in fields.items() if v})
    # Rows go in (and are updated) in one fixed order, so two imports writing overlapping
    # prospects wait for each other instead of deadlocking on PostgreSQL.
    merged = dict(sorted(merged.items()))
    values = []
    for email, fields in merged.items():
        columns, extra = split_fields(fields)
        values.append(
            {"email": email, **columns, "fields": extra, "created_at": now, "updated_at": now}
        )
    await execute_many(session, insert_ignore(session, Prospect), values)
    found = await session.execute(select(Prospect).where(Prospect.email.in_(list(merged))))
    by_email = {p.email: p for p in found.scalars()}
    for email, fields in merged.items():
        prospect = by_email[email]
        columns, extra = split_fields(fields)
        changes: dict[str, Any] = {
            c: v for c, v in columns.items() if v and getattr(prospect, c) != v
        }
        new_extra = {**(prospect.fields or {}), **extra}
        if new_extra != (prospect.fields or {}):
            changes["fields"] = new_extra
        if changes:
            changes["updated_at"] = now
            await session.execute(
                update(Prospect).where(Prospect.id == prospect.id).values(**changes)
            )
    aliases = [
        {"prospect_id": by_email[email].id, "email": alias}
        for email, fields in merged.items()
        for alias in alias_list(fields.get("aliases", ""))
        if alias != email
    ]
    if aliases:
        # The first prospect to claim an address keeps it; a clash is ignored, not an error.
        await execute_many(session, insert_ignore(session, ProspectAlias), aliases)
    return {email: p.id for email, p in by_email.items()}


def alias_list(value: str) -> list[str]:
    """Addresses from an ``aliases`` field: separated by commas, semicolons or spaces."""
    found = []
    for part in re.split(r"[,;\s]+", value or ""):
        address = part.strip().strip("<>").lower()
        if address.count("@") == 1 and "." in address.rsplit("@", 1)[1]:
            found.append(address)
    return sorted(set(found))


async def prospect_by_alias(session: AsyncSession, email: str) -> int | None:
    result = await session.execute(
        select(ProspectAlias.prospect_id).where(ProspectAlias.email == email.lower())
    )
    return result.scalar_one_or_none()


async def find_prospect(session: AsyncSession, email: str) -> Prospect | None:
    result = await session.execute(select(Prospect).where(Prospect.email == email.lower()))
    return result.scalar_one_or_none()


async def get_prospects(session: AsyncSession, ids: Iterable[int]) -> dict[int, Prospect]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    result = await session.execute(select(Prospect).where(Prospect.id.in_(wanted)))
    return {p.id: p for p in result.scalars()}


# --- suppression ----------------------------------------------------------------------------


def domain_key(email: str) -> str:
    return "@" + email.rsplit("@", 1)[-1]


async def suppressed(session: AsyncSession, emails: Iterable[str]) -> dict[str, str]:
    """For each suppressed email among ``emails``: the entry that suppresses it."""
    emails = list(emails)
    if not emails:
        return {}
    keys = set(emails) | {domain_key(e) for e in emails}
    result = await session.execute(
        select(Suppression.value, Suppression.reason).where(Suppression.value.in_(keys))
    )
    hits = {value: reason for value, reason in result.all()}
    found: dict[str, str] = {}
    for email in emails:
        if email in hits:
            found[email] = f"{email} ({hits[email]})"
        elif domain_key(email) in hits:
            found[email] = f"{domain_key(email)} ({hits[domain_key(email)]})"
    return found


async def add_suppression(
    session: AsyncSession, value: str, reason: str, note: str | None, now: datetime
) -> bool:
    """Suppress an address or ``@domain``; False when it already was."""
    result = await session.execute(
        insert_ignore(session, Suppression).values(
            value=value.lower(), reason=reason, note=note, created_at=now
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def list_suppressions(session: AsyncSession) -> list[Suppression]:
    result = await session.execute(select(Suppression).order_by(Suppression.created_at))
    return list(result.scalars())


async def prospects_matching(session: AsyncSession, value: str) -> list[int]:
    """Ids of prospects an address or ``@domain`` suppression applies to. A domain means the
    email address's domain: the same rule enrollment checks."""
    value = value.lower()
    condition = (
        Prospect.email.like(f"%{value}") if value.startswith("@") else Prospect.email == value
    )
    result = await session.execute(select(Prospect.id).where(condition))
    return list(result.scalars())
