"""`sequencer db upgrade` and `sequencer db current`."""

from __future__ import annotations

import asyncio

import click

from sequencer.cli.common import cli
from sequencer.settings import Settings
from sequencer.store.database import Database, head_revision


@cli.group()
def db() -> None:
    """Create or migrate the database (SEQUENCER_DATABASE_URL; default ./sequencer.db)."""


@db.command()
def upgrade() -> None:
    """Create the tables, or migrate them to this version's schema."""

    async def run() -> tuple[str | None, str, str]:
        database = Database(Settings.from_env().database_url)
        try:
            before = await database.current_revision()
            await database.upgrade()
            return before, head_revision(), database.display_url
        finally:
            await database.close()

    before, head, where = asyncio.run(run())
    if before == head:
        click.echo(f"{where} is already at schema {head}; nothing to do.")
    elif before is None:
        click.echo(f"Created the Sequencer tables in {where} (schema {head}).")
    else:
        click.echo(f"Migrated {where} from schema {before} to {head}.")


@db.command()
def current() -> None:
    """Say which schema the database is at, and whether it needs `db upgrade`."""

    async def run() -> tuple[str | None, str]:
        database = Database(Settings.from_env().database_url)
        try:
            return await database.current_revision(), database.display_url
        finally:
            await database.close()

    revision, where = asyncio.run(run())
    head = head_revision()
    if revision == head:
        click.echo(f"{where}: schema {revision} (up to date)")
    elif revision is None:
        click.echo(f"{where}: no Sequencer tables; run `sequencer db upgrade`")
    else:
        click.echo(f"{where}: schema {revision}, this version needs {head}")
