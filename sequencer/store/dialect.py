"""The few statements that differ between SQLite and PostgreSQL, written once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def insert_ignore(session: AsyncSession, model: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING``: a unique constraint, not a prior read, decides.
    Built on the Core table so executemany runs compile once and are batched."""
    table = model.__table__
    if dialect_name(session) == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


async def execute_many(
    session: AsyncSession, statement: Any, rows: Sequence[dict[str, Any]]
) -> list[Any]:
    """Run one statement for many rows (executemany); returns RETURNING rows if any."""
    connection = await session.connection()
    result = await connection.execute(statement, list(rows))
    return list(result.all()) if result.returns_rows else []


def for_update(
    session: AsyncSession, statement: Select[Any], *, skip_locked: bool = False
) -> Select[Any]:
    """Row locks on PostgreSQL; SQLite has one writer at a time (BEGIN IMMEDIATE) instead."""
    if dialect_name(session) == "postgresql":
        return statement.with_for_update(skip_locked=skip_locked)
    return statement
