"""The throwaway PostgreSQL server and the database fixtures built on it really work."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from servers import postgres
from servers.postgres import PostgresServer, TemplateFactory

USER_TABLES = (
    "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
)

# Every URL empty_database_url has handed out in this module; a repeat means shared state.
seen_urls: set[str] = set()


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_server_accepts_connections(postgres_server: PostgresServer) -> None:
    assert postgres_server.psql("SELECT 1") == "1"
    assert postgres_server.psql("SHOW listen_addresses") == "127.0.0.1"
    # Durability is deliberately off: the data dies with the session.
    assert postgres_server.psql("SHOW fsync") == "off"
    assert postgres_server.psql("SHOW server_encoding") == "UTF8"


def test_url_names_the_session_server(postgres_server: PostgresServer) -> None:
    port = postgres_server.port
    assert postgres_server.url("db") == f"postgresql+asyncpg://postgres@127.0.0.1:{port}/db"
    assert postgres_server.url("db", driver="psycopg").startswith("postgresql+psycopg://")


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_its_own_empty_database(
    empty_database_url: str, request: pytest.FixtureRequest, round_: int
) -> None:
    # Both rounds run per backend, and each leaves a table behind: if a database were shared
    # between tests, whichever round ran second would find the other's table.
    assert empty_database_url not in seen_urls
    seen_urls.add(empty_database_url)
    if empty_database_url.startswith("sqlite+aiosqlite:///"):
        path = Path(empty_database_url.removeprefix("sqlite+aiosqlite:///"))
        assert not path.exists()
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE leftover (id integer)")
        conn.close()
    else:
        assert empty_database_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = database_name(empty_database_url)
        assert name.startswith("t_")
        assert server.psql(USER_TABLES, name) == "0"
        server.psql("CREATE TABLE leftover (id integer)", name)


def test_temporary_databases_are_distinct_and_dropped(postgres_server: PostgresServer) -> None:
    with (
        postgres_server.temporary_database() as first,
        postgres_server.temporary_database() as second,
    ):
        assert first != second
        postgres_server.psql("CREATE TABLE only_in_first (id integer)", first)
        assert postgres_server.psql(USER_TABLES, first) == "1"
        assert postgres_server.psql(USER_TABLES, second) == "0"
        assert {first, second} <= postgres_server.databases()
    assert not {first, second} & postgres_server.databases()


def test_drop_database_disconnects_lingering_clients(postgres_server: PostgresServer) -> None:
    # A plain DROP DATABASE fails while anyone is connected (a test's leaked connection
    # pool, say); WITH (FORCE) disconnects them.
    name = postgres.random_database_name()
    postgres_server.create_database(name)
    holder = subprocess.Popen(
        postgres_server.psql_args(name),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=postgres_server.client_env(),
    )
    try:
        connected = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
        deadline = time.monotonic() + 10
        while postgres_server.psql(connected) != "1":
            assert time.monotonic() < deadline, "psql never connected"
            time.sleep(0.02)
        postgres_server.drop_database(name)
    finally:
        holder.kill()
        holder.communicate()
    assert name not in postgres_server.databases()


def test_clone_from_template_has_the_template_tables(
    postgres_server: PostgresServer, postgres_template_factory: TemplateFactory
) -> None:
    prepared: list[str] = []

    def prepare(url: str) -> None:
        prepared.append(url)
        name = database_name(url)
        postgres_server.psql("CREATE TABLE contacts (email text PRIMARY KEY)", name)
        postgres_server.psql("INSERT INTO contacts VALUES ('ada@example.com')", name)

    template = postgres_template_factory("tpl_clone_test", prepare)
    # Asking again is free: the template is prepared once per session.
    assert postgres_template_factory("tpl_clone_test", prepare) == template
    assert prepared == [postgres_server.url("tpl_clone_test")]

    with (
        postgres_server.temporary_database(template=template) as first,
        postgres_server.temporary_database(template=template) as second,
    ):
        for name in (first, second):
            assert postgres_server.psql("SELECT email FROM contacts", name) == "ada@example.com"
        # Copies are independent: changing one leaves the other (and the template) alone.
        postgres_server.psql("DELETE FROM contacts", first)
        assert postgres_server.psql("SELECT count(*) FROM contacts", second) == "1"


async def test_template_prepare_may_be_async(
    postgres_server: PostgresServer, postgres_template_factory: TemplateFactory
) -> None:
    # Called from inside this test's running event loop, like an async Alembic migration.
    async def prepare(url: str) -> None:
        postgres_server.psql("CREATE TABLE migrated (id integer)", database_name(url))

    template = postgres_template_factory("tpl_async_test", prepare)
    with postgres_server.temporary_database(template=template) as name:
        assert postgres_server.psql(USER_TABLES, name) == "1"


def test_failed_prepare_leaves_no_template(
    postgres_server: PostgresServer, postgres_template_factory: TemplateFactory
) -> None:
    def prepare(url: str) -> None:
        raise ValueError("migration failed")

    with pytest.raises(ValueError, match="migration failed"):
        postgres_template_factory("tpl_broken_test", prepare)
    assert "tpl_broken_test" not in postgres_server.databases()


def test_stop_removes_the_data_directory() -> None:
    server = PostgresServer()
    server.start()
    base_dir = server.base_dir
    assert base_dir is not None
    assert (server.data_dir / "PG_VERSION").exists()
    assert server.psql("SELECT 1") == "1"
    server.stop()
    assert not base_dir.exists()
    assert not server.running
    # Stopping twice is harmless (fixture teardown after a failed test may do it).
    server.stop()


def test_missing_binaries_name_the_fix(tmp_path: Path) -> None:
    (tmp_path / "initdb").touch()
    with pytest.raises(RuntimeError, match=r"pg_ctl, postgres, psql; run scripts/install-test"):
        PostgresServer(bin_dir=tmp_path)


def test_missing_postgres_install_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "DEBIAN_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"not found.*run scripts/install-test-services"):
        PostgresServer()
