"""Shared set-up for the web tests: a project on disk, the real app served by uvicorn on a free
loopback port, an engine on the same database for setting up and reading back, and a strict
reader of the Prometheus text format."""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import uvicorn
import yaml
from sqlalchemy import select
from starlette.applications import Starlette

from sequencer.catalog import CONFIG_NAME, Project, load_catalog
from sequencer.core.problems import Severity
from sequencer.core.prospects import ProspectRow
from sequencer.runtime.clock import ManualClock
from sequencer.runtime.engine import Engine
from sequencer.settings import Settings
from sequencer.store.database import Database
from sequencer.store.models import Enrollment, Event, Prospect, Suppression, Touch
from sequencer.web.app import create_app

REPO = Path(__file__).resolve().parents[2]
SECRET = b"web-test-secret-0123456789abcdef"
TOKEN = "api-token-0123456789abcdef-XYZ"
OWNER = "ana.reyes@northwind.example"
COMPANY = "Northwind Analytics"
#: Tuesday 4 March 2025, 10:00 in New York: inside every example sequence's window.
TUESDAY_10AM = datetime(2025, 3, 4, 10, 0, tzinfo=ZoneInfo("America/New_York"))

#: One email now, then a call task: small enough to reason about in every test.
EMAIL_THEN_CALL = """\
description: An email, then a call.
schedule:
  timezone: America/New_York
  hours: "09:00-17:00"
steps:
  - id: intro
    email: cold-intro
  - id: call
    delay: 1 day
    call: call-cold-first
    title: Call {{ prospect.first_name | default('them') }}
"""
CALL_FIRST = """\
description: A call first, then an email.
schedule:
  timezone: America/New_York
  hours: "09:00-17:00"
steps:
  - id: call
    call: call-cold-first
    title: Call {{ prospect.first_name | default('them') }}
  - id: intro
    delay: 1 day
    email: cold-intro
"""


def make_project(root: Path, *, smtp_port: int | None = None) -> Project:
    """The repository's example project plus the two small test sequences; with
    ``smtp_port``, every mailbox sends to that loopback SMTP server."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("sequences", "templates"):
        shutil.copytree(REPO / folder, root / folder, dirs_exist_ok=True)
    (root / "sequences" / "email-then-call.yaml").write_text(EMAIL_THEN_CALL)
    (root / "sequences" / "call-first.yaml").write_text(CALL_FIRST)
    config = yaml.safe_load((REPO / CONFIG_NAME).read_text())
    if smtp_port is not None:
        for box in config["mailboxes"]:
            box["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none"}
    (root / CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False))
    return Project(root, root / "sequences", root / "templates", root / CONFIG_NAME)


def person(email: str, **fields: str) -> ProspectRow:
    local_part, _, domain = email.partition("@")
    values = {
        "email": email,
        "first_name": local_part.split(".")[0].capitalize(),
        "company": domain.split(".")[0].capitalize(),
        "timezone": "America/New_York",
        **fields,
    }
    return ProspectRow(line=2, email=email, fields=values)


@dataclass
class Web:
    """The served app and a test-side engine on the same database and clock."""

    base: str
    app: Starlette
    engine: Engine
    clock: ManualClock
    client: httpx.AsyncClient  # no token
    api: httpx.AsyncClient  # with the right token


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()  # raises what stopped it
        assert server.started, "uvicorn did not start within 10 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


@asynccontextmanager
async def web_app(
    url: str,
    project: Project,
    *,
    api_token: str | None = TOKEN,
    secret: bytes = SECRET,
    start: datetime = TUESDAY_10AM,
    migrate_check: bool = True,
) -> AsyncIterator[Web]:
    """The app on ``url`` for ``project``, and an engine (same clock) to set up and read back."""
    catalog = load_catalog(project)
    errors = [p.format() for p in catalog.problems if p.severity is Severity.ERROR]
    assert not errors, errors
    clock = ManualClock(start)
    settings = Settings(database_url=url, api_token=api_token)
    app = create_app(settings, catalog, secret=secret, clock=clock)
    database = Database(url)
    engine = Engine(database, catalog, clock=clock, settings=settings)
    try:
        if migrate_check:
            await engine.sync_sequences()
        async with (
            serve(app) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as client,
            httpx.AsyncClient(
                base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as api,
        ):
            yield Web(base, app, engine, clock, client, api)
    finally:
        await database.close()


# --- reading back -----------------------------------------------------------------------------


Row = TypeVar("Row", Enrollment, Touch, Event)


async def _rows_of(engine: Engine, model: type[Row], email: str) -> list[Row]:
    """The prospect's rows of ``model`` (enrollments, touches or events), oldest first."""
    async with engine.db.transaction() as s:
        result = await s.execute(
            select(model)
            .join(Prospect, Prospect.id == model.prospect_id)
            .where(Prospect.email == email)
            .order_by(model.id)
        )
        return list(result.scalars())


async def enrollments_of(engine: Engine, email: str) -> list[Enrollment]:
    return await _rows_of(engine, Enrollment, email)


async def touches_of(engine: Engine, email: str) -> list[Touch]:
    return await _rows_of(engine, Touch, email)


async def events_of(engine: Engine, email: str) -> list[Event]:
    return await _rows_of(engine, Event, email)


async def suppressions(engine: Engine) -> dict[str, str]:
    async with engine.db.transaction() as s:
        rows = (await s.execute(select(Suppression))).scalars()
        return {row.value: row.reason for row in rows}


# --- the Prometheus text format (exposition format 0.0.4), read strictly ------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


@dataclass
class Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, suffix: str = "", **labels: str) -> float:
        found = [v for n, ls, v in self.samples if n == self.name + suffix and ls == labels]
        assert len(found) == 1, (self.name + suffix, labels, self.samples)
        return found[0]


def parse_prometheus(text: str) -> dict[str, Family]:
    """Every family of an exposition, failing on anything the format does not allow: a sample
    before its TYPE, a family typed twice, bad names, labels or numbers, counters without
    _total, histograms whose buckets are not cumulative or do not end with +Inf == _count."""
    assert text.endswith("\n"), "the exposition must end with a line feed"
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line!r}"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name), where
            assert name not in helps, f"HELP given twice, {where}"
            helps[name] = help_text
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and kind in _TYPES, where
            assert name not in families, f"TYPE given twice, {where}"
            families[name] = Family(name, kind, helps.get(name, ""), [])
            continue
        assert not line.startswith("#") or line.startswith("# "), where
        if line.startswith("#") or not line.strip():
            continue
        match = _SAMPLE.match(line)
        assert match, where
        sample_name, label_text, raw_value = match[1], match[2] or "", match[3]
        labels: dict[str, str] = {}
        rest = label_text
        while rest:
            label = _LABEL.match(rest)
            assert label, f"bad labels, {where}"
            labels[label[1]] = label[2]
            rest = rest[label.end() :]
        value = float(raw_value.replace("Inf", "inf"))
        family = next(
            (
                f
                for f in families.values()
                if sample_name == f.name
                or (
                    f.kind == "histogram"
                    and sample_name in {f.name + s for s in ("_bucket", "_sum", "_count")}
                )
            ),
            None,
        )
        assert family is not None, f"sample before its TYPE, {where}"
        assert family.samples == [] or family is list(families.values())[-1], (
            f"samples of one family must be together, {where}"
        )
        family.samples.append((sample_name, labels, value))
    for family in families.values():
        if family.kind == "counter":
            assert family.name.endswith("_total"), family.name
            assert all(v >= 0 for _, _, v in family.samples), family
        if family.kind == "histogram":
            buckets = [(ls["le"], v) for n, ls, v in family.samples if n.endswith("_bucket")]
            assert buckets and buckets[-1][0] == "+Inf", family
            bounds = [float(le.replace("Inf", "inf")) for le, _ in buckets]
            assert bounds == sorted(bounds), family
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), f"buckets not cumulative: {family}"
            assert math.isclose(counts[-1], family.value("_count")), family
    return families


def metric_values(text: str) -> dict[str, Any]:
    """name -> value for the unlabelled samples: handy for before/after comparisons."""
    return {
        name: family.samples[0][2]
        for name, family in parse_prometheus(text).items()
        if len(family.samples) == 1 and not family.samples[0][1]
    }
