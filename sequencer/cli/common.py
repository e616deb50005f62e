"""What every command shares: the group, error output, JSON, tables, opening the engine."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from sequencer import __version__
from sequencer.catalog import Catalog, Project, load_catalog
from sequencer.core.problems import Problem, Severity, has_errors
from sequencer.runtime.clock import Clock, ManualClock, SystemClock
from sequencer.runtime.engine import Engine
from sequencer.settings import Settings
from sequencer.store.database import open_database


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sequencer")
def cli() -> None:
    """Sequencer: multi-touch email sequences that stop the moment a prospect replies."""


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    if hint:
        click.echo(f"    hint: {hint}", err=True)
    sys.exit(code)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def plural(count: int, word: str) -> str:
    """``1 touch``, ``2 touches``, ``3 tasks``."""
    if count == 1:
        return f"{count} {word}"
    suffix = "es" if word.endswith(("ch", "sh", "s", "x")) else "s"
    return f"{count} {word}{suffix}"


def print_problems(problems: Sequence[Problem], *, err: bool = False) -> None:
    for problem in problems:
        colour = "red" if problem.severity is Severity.ERROR else "yellow"
        click.echo(
            click.style(f"{problem.location}: ", bold=True)
            + click.style(f"{problem.severity.value}: ", fg=colour, bold=True)
            + problem.message,
            err=err,
        )
        if problem.hint:
            for i, line in enumerate(problem.hint.splitlines()):
                click.echo(("    hint: " if i == 0 else "          ") + line, err=err)


def console(*, err: bool = False) -> Console:
    """A console for tables and progress; plain text when not a terminal."""
    return Console(stderr=err, highlight=False, soft_wrap=False)


def table(*columns: str) -> Table:
    result = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        result.add_column(column)
    return result


def local(moment: datetime | None, fmt: str = "%a %d %b %H:%M") -> str:
    """A time in the zone of the machine running the command (the rep's own)."""
    if moment is None:
        return "-"
    return moment.astimezone().strftime(fmt)


def load_project_catalog(*, quiet: bool = False) -> Catalog:
    """Every valid sequence and template of the project; files with errors are left out,
    with a one-line warning so nobody is surprised."""
    catalog = load_catalog(Project.discover())
    if has_errors(catalog.problems) and not quiet:
        broken = sorted({p.location.path for p in catalog.problems if p.severity is Severity.ERROR})
        click.secho(
            f"warning: {plural(len(broken), 'file')} with problems left out "
            f"({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}); "
            "run `sequencer validate`",
            fg="yellow",
            err=True,
        )
    return catalog


@asynccontextmanager
async def open_engine(*, quiet: bool = False) -> AsyncIterator[Engine]:
    """The engine on the configured database (refused unless migrated), with the project's
    sequences synced so edits apply to live enrollments, and due housekeeping done: pauses
    that have run out end, and tasks left undone past the expiry move on."""
    settings = Settings.from_env()
    catalog = load_project_catalog(quiet=quiet)
    database = await open_database(settings.database_url)
    try:
        clock: Clock = ManualClock(settings.now) if settings.now else SystemClock()
        engine = Engine(database, catalog, clock=clock, settings=settings)
        await engine.sync_sequences()
        await engine.resume_due()
        await engine.expire_tasks()
        yield engine
    finally:
        await database.close()
