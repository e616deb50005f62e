"""Connecting to the database (SQLite or PostgreSQL), transactions, and the schema version check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from sequencer.core.errors import DatabaseError, SchemaMismatch

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_URL = "sqlite+aiosqlite:///sequencer.db"


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (``postgres://``, ``sqlite:///x.db``) and pick async drivers."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(
            f"SEQUENCER_DATABASE_URL {redact(url)!r} is not a database URL; "
            "e.g. sqlite+aiosqlite:///sequencer.db or postgresql+asyncpg://user@host/db"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise DatabaseError(
            f"unsupported database {backend!r} in SEQUENCER_DATABASE_URL; use SQLite or PostgreSQL"
        )
    return parsed.render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unreadable URL>"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config(DEFAULT_URL)).get_current_head()
    assert head is not None
    return head


class Database:
    """One database: an async engine, transactions, migrations."""

    def __init__(self, url: str = DEFAULT_URL, *, echo: bool = False) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @property
    def display_url(self) -> str:
        return redact(self.url)

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed on success, rolled back on any error."""
        try:
            if self.is_sqlite:
                # SQLite has one writer (every transaction here begins IMMEDIATE): tasks of
                # this process queue on a lock rather than in SQLite's busy handler, which
                # polls with sleeps of up to 100 ms and cost most of the time when sending.
                async with self._writer_lock(), self.sessions() as session, session.begin():
                    yield session
            else:
                async with self.sessions() as session, session.begin():
                    yield session
        except OperationalError as exc:
            raise DatabaseError(f"database {self.display_url}: {exc.orig}") from exc

    def _writer_lock(self) -> asyncio.Lock:
        """The lock for this event loop (a Database may outlive the loop it was made in)."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer[0] is not loop:
            self._writer = (loop, asyncio.Lock())
        return self._writer[1]

    # --- schema -----------------------------------------------------------------------------

    async def current_revision(self) -> str | None:
        def read(connection: Connection) -> str | None:
            return MigrationContext.configure(connection).get_current_revision()

        try:
            async with self.engine.connect() as connection:
                return await connection.run_sync(read)
        except OperationalError as exc:
            raise DatabaseError(f"cannot open database {self.display_url}: {exc.orig}") from exc
        except OSError as exc:
            raise DatabaseError(f"cannot reach database {self.display_url}: {exc}") from exc

    async def check_schema(self) -> None:
        """Refuse a database that is not at this version's schema, saying what to run."""
        current = await self.current_revision()
        head = head_revision()
        if current == head:
            return
        script = ScriptDirectory.from_config(alembic_config(self.url))
        if current is None:
            raise SchemaMismatch(
                f"the database {self.display_url} has no Sequencer tables yet; "
                "run `sequencer db upgrade` to create them"
            )
        known = {rev.revision for rev in script.walk_revisions()}
        if current not in known:
            raise SchemaMismatch(
                f"the database {self.display_url} was created by a newer Sequencer "
                f"(schema {current}); upgrade Sequencer, or point SEQUENCER_DATABASE_URL "
                "at another database"
            )
        raise SchemaMismatch(
            f"the database {self.display_url} is at schema {current}, this version needs {head}; "
            "run `sequencer db upgrade`"
        )

    async def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision``."""
        config = alembic_config(self.url)

        def run(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        async with self.engine.begin() as connection:
            await connection.run_sync(run)

    async def downgrade(self, revision: str) -> None:
        config = alembic_config(self.url)

        def run(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)

        async with self.engine.begin() as connection:
            await connection.run_sync(run)


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL for concurrent readers, foreign keys on, and BEGIN IMMEDIATE so a writer waits for
    the lock up front instead of failing when a read turns into a write."""

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


async def open_database(url: str, *, check: bool = True) -> Database:
    """A database ready for use; with ``check``, one whose schema matches this version."""
    database = Database(url)
    if check:
        try:
            await database.check_schema()
        except BaseException:
            await database.close()
            raise
    return database


def run(coro: Any) -> Any:
    """Run a coroutine from synchronous code (the CLI)."""
    return asyncio.run(coro)
