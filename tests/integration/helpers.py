"""Shared set-up for the engine's integration tests: projects on disk, engines on a real
database with a hand-moved clock, prospects, and queries that read back what a user would see."""

from __future__ import annotations

import csv
import shutil
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from sequencer.catalog import CONFIG_NAME, Catalog, Project, load_catalog
from sequencer.core.problems import Severity
from sequencer.core.prospects import ProspectRow, RowProblem
from sequencer.core.states import TaskOutcome, TouchState
from sequencer.runtime.clock import ManualClock
from sequencer.runtime.engine import Engine
from sequencer.runtime.enrollment import EnrollReport, enroll
from sequencer.settings import Settings
from sequencer.store import touches as tq
from sequencer.store.database import Database
from sequencer.store.events import timeline
from sequencer.store.models import Enrollment, Event, Prospect, SequenceRecord, Task, Touch

REPO = Path(__file__).resolve().parents[2]
OWNER = "ana.reyes@northwind.example"
OTHER_MAILBOX = "marcus.oyelaran@northwind.example"
NEW_YORK = ZoneInfo("America/New_York")
COUNTED = {
    "prospects": Prospect,
    "enrollments": Enrollment,
    "touches": Touch,
    "tasks": Task,
    "events": Event,
}


def local(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, zone: str = "America/New_York"
) -> datetime:
    """A wall-clock moment in ``zone`` (New York unless told), as an aware datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))


#: Tuesday 4 March 2025, 10:00 in New York: inside every example sequence's window.
TUESDAY_10AM = local(2025, 3, 4, 10, 0)


# --- projects ---------------------------------------------------------------------------------


def project_at(root: Path) -> Project:
    """The project in ``root``, ignoring any SEQUENCER_* directory overrides."""
    return Project(root, root / "sequences", root / "templates", root / CONFIG_NAME)


def make_project(
    root: Path,
    sequences: Mapping[str, str] | None = None,
    *,
    templates: Mapping[str, str] | None = None,
    examples: bool = True,
) -> Project:
    """A project in ``root`` with the repository's templates and sequencer.yaml, the example
    sequences (unless ``examples`` is false) and the given extra sequences and templates."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / CONFIG_NAME, root / CONFIG_NAME)
    if not (root / "templates").exists():
        shutil.copytree(REPO / "templates", root / "templates")
    (root / "sequences").mkdir(exist_ok=True)
    if examples:
        for path in (REPO / "sequences").glob("*.yaml"):
            shutil.copy(path, root / "sequences" / path.name)
    for name, text in (templates or {}).items():
        (root / "templates" / f"{name}.j2").write_text(text, encoding="utf-8")
    for name, text in (sequences or {}).items():
        write_sequence(root, name, text)
    return project_at(root)


def one_email_sequence(template: str, mailboxes: Sequence[str] = (OWNER,)) -> str:
    """A sequence of one immediate email from ``mailboxes``, sendable at any hour of any day and
    with no per-prospect limits: for tests of sending itself, whatever time they run."""
    return f"""\
description: One immediate email.
schedule:
  timezone: UTC
  days: every day
  hours: "00:00-23:59"
limits:
  min_gap: none
  max_per_week: none
mailbox: [{", ".join(mailboxes)}]
steps:
  - id: hello
    delay: immediately
    anytime: true
    email: {template}
"""


def write_sequence(root: Path, name: str, text: str) -> Path:
    path = root / "sequences" / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(project: Project) -> Catalog:
    """The project's catalog; fails the test when the project itself has errors."""
    catalog = load_catalog(project)
    errors = [p.format() for p in catalog.problems if p.severity is Severity.ERROR]
    assert not errors, "\n".join(errors)
    return catalog


# --- engines ----------------------------------------------------------------------------------


@asynccontextmanager
async def running_engine(
    url: str,
    project: Project | None = None,
    *,
    start: datetime = TUESDAY_10AM,
    clock: ManualClock | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[Engine]:
    """An engine on ``url`` with the project's sequences synced and a clock that only moves
    when told (``start`` unless a clock is given); the database is closed afterwards."""
    database = Database(url)
    try:
        engine = Engine(
            database,
            load(project or project_at(REPO)),
            clock=clock or ManualClock(start),
            settings=settings,
        )
        await engine.sync_sequences()
        yield engine
    finally:
        await database.close()


def clock_of(engine: Engine) -> ManualClock:
    assert isinstance(engine.clock, ManualClock)
    return engine.clock


def move_to(engine: Engine, moment: datetime) -> datetime:
    return clock_of(engine).set(moment)


# --- prospects and enrolling ------------------------------------------------------------------


def person(
    email: str,
    *,
    line: int = 2,
    first_name: str | None = None,
    timezone: str = "America/New_York",
    **fields: str,
) -> ProspectRow:
    """A clean prospect row, as the CSV reader would produce it."""
    local_part, _, domain = email.partition("@")
    values = {
        "email": email,
        "first_name": first_name or local_part.split(".")[0].capitalize(),
        "company": domain.split(".")[0].capitalize(),
        "timezone": timezone,
        "domain": domain,
        **fields,
    }
    return ProspectRow(line=line, email=email, fields=values)


def people(*emails: str, line_start: int = 2, **fields: str) -> list[ProspectRow]:
    return [person(email, line=index + line_start, **fields) for index, email in enumerate(emails)]


async def enroll_rows(
    engine: Engine,
    sequence: str,
    rows: Iterable[ProspectRow | RowProblem],
    *,
    owner: str = OWNER,
    mailbox: str | None = None,
    dry_run: bool = False,
    expect_all: bool = True,
) -> EnrollReport:
    """Enroll rows (owned by Ana unless told); with ``expect_all``, every row must go in."""
    report = await enroll(engine, sequence, rows, owner=owner, mailbox=mailbox, dry_run=dry_run)
    if expect_all:
        assert not report.skipped, report.skipped
    return report


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- reading back -----------------------------------------------------------------------------


async def table_counts(database: Database) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with database.transaction() as s:
        for name, model in COUNTED.items():
            counts[name] = (await s.execute(select(func.count()).select_from(model))).scalar_one()
    return counts


async def prospect(engine: Engine, email: str) -> Prospect:
    async with engine.db.transaction() as s:
        found = (
            await s.execute(select(Prospect).where(Prospect.email == email))
        ).scalar_one_or_none()
    assert found is not None, f"no prospect {email}"
    return found


async def enrollments(engine: Engine, email: str, sequence: str | None = None) -> list[Enrollment]:
    """The prospect's enrollments, oldest first (only in ``sequence`` when given)."""
    async with engine.db.transaction() as s:
        statement = (
            select(Enrollment)
            .join(Prospect, Prospect.id == Enrollment.prospect_id)
            .where(Prospect.email == email)
            .order_by(Enrollment.id)
        )
        if sequence is not None:
            statement = statement.join(
                SequenceRecord, SequenceRecord.id == Enrollment.sequence_id
            ).where(SequenceRecord.name == sequence)
        return list((await s.execute(statement)).scalars())


async def enrollment(engine: Engine, email: str, sequence: str | None = None) -> Enrollment:
    found = await enrollments(engine, email, sequence)
    assert len(found) == 1, f"{email}: {len(found)} enrollments"
    return found[0]


async def touches(engine: Engine, email: str) -> list[Touch]:
    """Every touch of the prospect, in the order they were planned."""
    async with engine.db.transaction() as s:
        result = await s.execute(
            select(Touch)
            .join(Prospect, Prospect.id == Touch.prospect_id)
            .where(Prospect.email == email)
            .order_by(Touch.id)
        )
        return list(result.scalars())


async def pending(engine: Engine, email: str) -> list[Touch]:
    pending_states = {TouchState.SCHEDULED.value, TouchState.QUEUED.value}
    return [t for t in await touches(engine, email) if t.state in pending_states]


async def next_touch(engine: Engine, email: str) -> Touch:
    """The prospect's one pending touch (there must be exactly one: never a burst)."""
    found = await pending(engine, email)
    assert len(found) == 1, [(t.step_id, t.state, t.due_at) for t in found]
    return found[0]


async def task_of(engine: Engine, touch: Touch) -> Task:
    async with engine.db.transaction() as s:
        task = await tq.task_for_touch(s, touch.id)
    assert task is not None, f"touch {touch.step_id} has no task"
    return task


async def events(engine: Engine, email: str) -> list[Event]:
    found = await prospect(engine, email)
    async with engine.db.transaction() as s:
        return await timeline(s, found.id)


async def kinds(engine: Engine, email: str) -> list[str]:
    return [e.kind for e in await events(engine, email)]


async def do_next(engine: Engine, email: str) -> Touch:
    """Let time run to the prospect's pending touch and do it: an email counts as sent at its
    due time, a task is done by the rep (connected). Returns the touch that was done."""
    touch = await next_touch(engine, email)
    if touch.due_at > engine.now():
        move_to(engine, touch.due_at)
    if touch.channel == "email":
        await engine.complete_touch(touch.id)
    else:
        task = await task_of(engine, touch)
        await engine.complete_task(task.id, TaskOutcome.CONNECTED)
    return touch


def in_window(moment: datetime, zone: ZoneInfo = NEW_YORK) -> bool:
    """Inside cold-outbound's window: a weekday, 08:30-11:30 or 13:30-16:30 local time."""
    wall = moment.astimezone(zone)
    hours = ((time(8, 30), time(11, 30)), (time(13, 30), time(16, 30)))
    return wall.weekday() < 5 and any(start <= wall.time() < end for start, end in hours)


def local_date(moment: datetime, zone: ZoneInfo = NEW_YORK) -> date:
    return moment.astimezone(zone).date()
