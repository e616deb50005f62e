"""The few statements that differ between SQLite and PostgreSQL, written once."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def insert_ignore(session: AsyncSession, model: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING``: a unique constraint, not a prior read, decides."""
    if dialect_name(session) == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    return sqlite.insert(model).on_conflict_do_nothing()


def for_update(
    session: AsyncSession, statement: Select[Any], *, skip_locked: bool = False
) -> Select[Any]:
    """Row locks on PostgreSQL; SQLite has one writer at a time (BEGIN IMMEDIATE) instead."""
    if dialect_name(session) == "postgresql":
        return statement.with_for_update(skip_locked=skip_locked)
    return statement
