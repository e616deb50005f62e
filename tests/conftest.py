"""Test-wide settings and fixtures: Hypothesis profiles, real database servers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from servers.dovecot import DovecotServer
from servers.postgres import PostgresServer, TemplateFactory
from servers.smtp import RecordingSMTPServer

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# -- real database servers ----------------------------------------------------------------
#
# Tests get real databases, never mocks: SQLite in the test's tmp_path, and PostgreSQL from one
# throwaway server per session (tests/servers/postgres.py) that is only started when some test
# asks for it.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, on 127.0.0.1 at a free port.

    Started the first time a test needs it and stopped (its data directory removed) at the
    end of the session. Durability is off and auth is trust for user ``postgres``; build URLs
    with ``postgres_server.url(name)`` and databases with ``create_database``/``drop_database``
    or ``temporary_database()``. Fails with a pointer to scripts/install-test-services when
    PostgreSQL isn't installed.
    """
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLAlchemy async URL of a fresh, empty database; each test runs once per backend.

    - sqlite: ``sqlite+aiosqlite:///<tmp_path>/sequencer.db`` (the file doesn't exist yet).
    - postgresql: ``postgresql+asyncpg://postgres@127.0.0.1:<port>/t_<hex>``, a new database
      on the session server, dropped WITH (FORCE) after the test so leaked connections
      don't block it.
    """
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/sequencer.db"
        return
    # Looked up lazily so sqlite-only runs never start PostgreSQL.
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.temporary_database() as name:
        yield server.url(name)


@pytest.fixture(scope="session")
def postgres_template_factory(postgres_server: PostgresServer) -> TemplateFactory:
    """Build a PostgreSQL template database once per session; returns its name.

    Call it as ``factory(name, prepare)``: the first call creates database ``name``, calls
    ``prepare(url)`` with its asyncpg URL (e.g. to run migrations; it may be a coroutine
    function) and freezes the result as a template; later calls with the same name return at
    once. Tests then get their own copy cheaply with
    ``postgres_server.temporary_database(template=name)`` (CREATE DATABASE ... TEMPLATE name),
    which resets state per test without re-running the preparation.
    """
    built: dict[str, str] = {}

    def factory(name: str, prepare: Callable[[str], object]) -> str:
        if name not in built:
            postgres_server.create_database(name)
            try:
                _call_in_own_thread(prepare, postgres_server.url(name))
                postgres_server.make_template(name)
            except BaseException:
                # Never leave a half-prepared template for a later call to mistake as ready.
                postgres_server.drop_database(name)
                raise
            built[name] = name
        return built[name]

    return factory


def _call_in_own_thread(prepare: Callable[[str], object], url: str) -> None:
    """Call prepare(url), awaiting its result if it returns one.

    A thread with its own event loop lets the factory be used from sync and async tests
    alike: prepare may use asyncio.run (as async Alembic environments do), which fails inside
    the test's running loop.
    """

    def run() -> None:
        result = prepare(url)
        if inspect.isawaitable(result):

            async def wait() -> None:
                await result

            asyncio.run(wait())

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(run).result()


# -- a migrated Sequencer database, on each backend ---------------------------------------


async def _migrate(url: str) -> None:
    from sequencer.store.database import Database

    database = Database(url)
    try:
        await database.upgrade()
    finally:
        await database.close()


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head per session; tests copy it instead of migrating."""
    path = tmp_path_factory.mktemp("sqlite-template") / "sequencer.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the current schema, on SQLite and on PostgreSQL: the contract
    tests that take it run once per backend."""
    if request.param == "sqlite":
        import shutil

        target = tmp_path / "sequencer.db"
        shutil.copy(request.getfixturevalue("migrated_sqlite_file"), target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    factory: TemplateFactory = request.getfixturevalue("postgres_template_factory")
    template = factory("sequencer_migrated", _migrate)
    with server.temporary_database(template=template) as name:
        yield server.url(name)


# -- Redis (for `sequencer worker`) ---------------------------------------------------------

from servers.redis import RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session (tests/servers/redis.py) on 127.0.0.1 at a free
    port, no persistence; started the first time a test needs it, stopped at the end.
    ``redis_server.url`` is ``redis://127.0.0.1:PORT/0``. Tests take ``redis_url`` instead,
    which empties it first."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis server, emptied (FLUSHALL) for this test; its URL."""
    redis_server.flush()
    return redis_server.url


# -- a real IMAP server ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer]:
    """One Dovecot IMAP server for the whole session, on 127.0.0.1 at free ports.

    Started the first time a test needs it, stopped (mail and all) at the end of the session.
    ``port`` speaks plain IMAP (plain-text login allowed) and offers STARTTLS; ``tls_port``
    speaks implicit TLS with the self-signed ``certificate``. Tests get their own mailbox from
    ``imap_user``. Fails with a pointer to scripts/install-test-services when Dovecot isn't
    installed.
    """
    with DovecotServer() as server:
        yield server


@pytest.fixture
def imap_user(dovecot_server: DovecotServer) -> tuple[str, str]:
    """A fresh, empty mailbox on the session's Dovecot: (user name, password), both random."""
    user = f"u{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(16)
    dovecot_server.add_user(user, password)
    return user, password


# -- an SMTP server that records what it receives --------------------------------------------


@pytest.fixture
def smtp() -> Iterator[RecordingSMTPServer]:
    """A recording SMTP server (aiosmtpd) on 127.0.0.1 at a free port, for one test."""
    with RecordingSMTPServer() as server:
        yield server
