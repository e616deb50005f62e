"""The scale benchmark's data: a project with a three-email sequence pointed at a test SMTP
server, the due prospects' CSV, the bulk load of enrollments shaped like the engine's, and the
check that they are (see bench/scale_bench.py for how they are used)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from common import REPO
from sqlalchemy import text

from sequencer.store.database import Database

OWNER = "ana.reyes@northwind.example"
SEQUENCE = "bench"
ZONES = ["America/New_York", "America/Chicago", "Europe/Berlin", "Europe/London", "Asia/Tokyo"]
BENCH_SEQUENCE = """\
description: Three emails, for the scale benchmark; sends any time of day.
schedule:
  timezone: UTC
  days: every day
  hours: "00:00-23:59"
limits:
  min_gap: none
  max_per_week: none
mailbox: owner
steps:
  - id: intro
    delay: immediately
    anytime: true
    email: cold-intro
  - id: bump
    delay: 3 days
    email: cold-new-angle
  - id: break-up
    delay: 4 days
    email: cold-break-up
"""

# --- the project ------------------------------------------------------------------------------


def make_project(root: Path, smtp_port: int) -> Path:
    """The example templates and mailboxes, pointed at the SMTP server on ``smtp_port`` with no
    cap or spacing, and one sequence (`bench`) of three emails."""
    root.mkdir(parents=True)
    (root / "sequences").mkdir()
    (root / "sequences" / f"{SEQUENCE}.yaml").write_text(BENCH_SEQUENCE)
    os.symlink(REPO / "templates", root / "templates")
    config = yaml.safe_load((REPO / "sequencer.yaml").read_text())
    for box in config["mailboxes"]:
        box["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none", "timeout": 10}
        box["daily_cap"] = 1_000_000
        box["min_spacing"] = "0 minutes"
    config["sending"] = {"company_daily_limit": "none"}
    (root / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def write_due_csv(path: Path, count: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "last_name", "company", "title", "timezone"])
        for i in range(count):
            writer.writerow(
                [
                    f"due{i}@duecompany{i % 50}.example",
                    f"First{i}",
                    f"Last{i}",
                    f"Due Company {i % 50}",
                    "VP Operations",
                    ZONES[i % len(ZONES)],
                ]
            )


def cli(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sequencer", *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"sequencer {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


# --- the bulk load ----------------------------------------------------------------------------


# Every time is a function of the prospect id, so each statement can recompute it: the first
# email went out between 1 and 3 days (less 2 hours) ago, a few seconds after the enrollment,
# so the second is due between 2 hours and 2 days from now, however long the load takes. Sends
# older than a day keep the mailboxes' 24-hour history realistic: two mailboxes sending a
# third of a million emails in the last day would be over any real daily cap, and the send
# check reads up to `daily_cap` of those times.
def sent_at(pid: str) -> str:
    return f"(CAST(:now AS timestamptz) - make_interval(secs => 86460 + ({pid} * 7919) % 165000))"


def enrolled_at(pid: str) -> str:
    return f"({sent_at(pid)} - make_interval(secs => 1 + {pid} % 30))"


SENT_AT = sent_at("p.id")
ENROLLED_AT = enrolled_at("p.id")
BULK = "p.email LIKE 'bulk%'"

BULK_SQL = [
    (
        "prospects",
        f"""
        INSERT INTO prospects (id, email, first_name, last_name, company, title, timezone, domain,
                               fields, created_at, updated_at)
        SELECT x.pid, 'bulk' || i || '@company' || (i % 5000) || '.example', 'First' || i,
               'Last' || i, 'Company ' || (i % 5000), 'VP Operations',
               (ARRAY['America/New_York','America/Chicago','Europe/Berlin','Europe/London','Asia/Tokyo'])[1 + i % 5],
               'company' || (i % 5000) || '.example', '{{}}'::jsonb,
               {enrolled_at("x.pid")}, {enrolled_at("x.pid")}
        FROM (SELECT nextval(pg_get_serial_sequence('prospects', 'id')) AS pid, i
              FROM generate_series(1, :count) AS i) AS x
        """,
    ),
    (
        "enrollments",
        f"""
        INSERT INTO enrollments (id, prospect_id, sequence_id, version_id, owner, mailbox, state,
                                 thread_message_id, thread_subject, created_at, updated_at)
        SELECT x.eid, x.pid, :sequence_id, :version_id, :owner, :owner, 'active',
               '<s' || x.eid || '.intro.' || substr(md5(x.eid::text), 1, 10) || '@northwind.example>',
               'Forecasting volume at ' || x.company, x.enrolled, x.enrolled
        FROM (SELECT nextval(pg_get_serial_sequence('enrollments', 'id')) AS eid, p.id AS pid,
                     p.company, {ENROLLED_AT} AS enrolled
              FROM prospects p WHERE {BULK} ORDER BY p.id) AS x
        """,
    ),
    (
        "touches",
        f"""
        INSERT INTO touches (enrollment_id, prospect_id, step_id, step_index, channel, state,
                             due_at, template, message_id, attempts, completed_at, created_at,
                             updated_at)
        SELECT e.id, p.id, 'intro', 0, 'email', 'sent', e.created_at, 'cold-intro',
               e.thread_message_id, 1, {SENT_AT}, e.created_at, {SENT_AT}
        FROM enrollments e JOIN prospects p ON p.id = e.prospect_id WHERE {BULK} ORDER BY e.id
        """,
    ),
    (
        "touches",
        f"""
        INSERT INTO touches (enrollment_id, prospect_id, step_id, step_index, channel, state,
                             due_at, template, attempts, created_at, updated_at)
        SELECT e.id, p.id, 'bump', 1, 'email', 'scheduled', {SENT_AT} + interval '3 days',
               'cold-new-angle', 0, {SENT_AT}, {SENT_AT}
        FROM enrollments e JOIN prospects p ON p.id = e.prospect_id WHERE {BULK} ORDER BY e.id
        """,
    ),
    (
        "events",
        f"""
        INSERT INTO events (prospect_id, enrollment_id, kind, at, data)
        SELECT p.id, e.id, 'enrolled', e.created_at,
               jsonb_build_object('owner', CAST(:owner AS text), 'steps', 3, 'mailbox', CAST(:owner AS text), 'sequence', CAST(:sequence AS text))
        FROM enrollments e JOIN prospects p ON p.id = e.prospect_id WHERE {BULK} ORDER BY e.id
        """,
    ),
    (
        "events",
        f"""
        INSERT INTO events (prospect_id, enrollment_id, touch_id, kind, at, data)
        SELECT p.id, e.id, t.id, 'sent', t.completed_at,
               jsonb_build_object('step', 'intro', 'total', 3, 'attempt', 1, 'channel', 'email',
                                  'mailbox', CAST(:owner AS text), 'template', 'cold-intro',
                                  'message_id', t.message_id)
        FROM enrollments e JOIN prospects p ON p.id = e.prospect_id
        JOIN touches t ON t.enrollment_id = e.id AND t.step_id = 'intro'
        WHERE {BULK} ORDER BY e.id
        """,
    ),
]


async def bulk_load(url: str, count: int) -> float:
    """Load ``count`` enrollments shaped like the engine's; returns the seconds it took."""
    database = Database(url)
    started = time.perf_counter()
    try:
        async with database.engine.begin() as conn:
            sequence_id, version_id = (
                await conn.execute(
                    text(
                        "SELECT s.id, max(v.id) FROM sequences s JOIN sequence_versions v "
                        "ON v.sequence_id = s.id WHERE s.name = :name GROUP BY s.id"
                    ),
                    {"name": SEQUENCE},
                )
            ).one()
            params = {
                "now": datetime.now(UTC),
                "count": count,
                "sequence_id": sequence_id,
                "version_id": version_id,
                "owner": OWNER,
                "sequence": SEQUENCE,
            }
            for _, sql in BULK_SQL:
                await conn.execute(text(sql), params)
    finally:
        await database.close()
    return time.perf_counter() - started


# --- the shape check --------------------------------------------------------------------------

SHAPE_SQL = {
    "prospects": "SELECT p.* FROM prospects p WHERE p.id IN ({ids})",
    "enrollments": "SELECT e.* FROM enrollments e WHERE e.prospect_id IN ({ids})",
    "touches": "SELECT t.* FROM touches t WHERE t.prospect_id IN ({ids})",
    "events": "SELECT v.* FROM events v WHERE v.prospect_id IN ({ids})",
}
#: Columns whose value (not only whether it is set) must agree between engine and bulk rows.
CATEGORICAL = {
    "sequence_id",
    "version_id",
    "owner",
    "mailbox",
    "state",
    "stop_reason",
    "step_id",
    "step_index",
    "channel",
    "template",
    "attempts",
    "kind",
    "title",
}
#: Consistency every enrollment (engine-made or bulk) must pass; each query counts failures.
CONSISTENCY_SQL = {
    "two touches, first sent, second scheduled": """
        SELECT count(*) FROM enrollments e WHERE e.prospect_id IN ({ids}) AND NOT (
          (SELECT count(*) FROM touches t WHERE t.enrollment_id = e.id) = 2
          AND EXISTS (SELECT 1 FROM touches t WHERE t.enrollment_id = e.id AND t.step_id = 'intro' AND t.state = 'sent')
          AND EXISTS (SELECT 1 FROM touches t WHERE t.enrollment_id = e.id AND t.step_id = 'bump' AND t.state = 'scheduled'))
    """,
    "thread is the first email's Message-ID": """
        SELECT count(*) FROM enrollments e JOIN touches t ON t.enrollment_id = e.id AND t.step_id = 'intro'
        WHERE e.prospect_id IN ({ids}) AND (e.thread_message_id IS DISTINCT FROM t.message_id
          OR t.message_id NOT LIKE '<s' || e.id || '.intro.%@northwind.example>')
    """,
    "second touch due 3 days after the first went out": """
        SELECT count(*) FROM touches a JOIN touches b ON b.enrollment_id = a.enrollment_id
        WHERE a.prospect_id IN ({ids}) AND a.step_id = 'intro' AND b.step_id = 'bump'
          AND (b.due_at <> a.completed_at + interval '3 days' OR b.created_at <> a.completed_at
               OR a.due_at > a.completed_at OR a.completed_at > CAST(:now AS timestamptz))
    """,
    "events: enrolled then sent, of the first touch": """
        SELECT count(*) FROM enrollments e WHERE e.prospect_id IN ({ids}) AND NOT (
          (SELECT array_agg(v.kind ORDER BY v.at) FROM events v WHERE v.enrollment_id = e.id) = ARRAY['enrolled', 'sent']::varchar[]
          AND EXISTS (SELECT 1 FROM events v JOIN touches t ON t.id = v.touch_id
                      WHERE v.enrollment_id = e.id AND v.kind = 'sent' AND t.step_id = 'intro'
                        AND v.at = t.completed_at AND v.data->>'message_id' = t.message_id))
    """,
    "prospect created when enrolled": """
        SELECT count(*) FROM enrollments e JOIN prospects p ON p.id = e.prospect_id
        WHERE p.id IN ({ids}) AND (p.created_at <> e.created_at OR e.updated_at <> e.created_at)
    """,
}


def signature(row: dict[str, Any]) -> tuple[tuple[str, object], ...]:
    """What a row looks like without its particular values: which columns are set, the values
    of the categorical ones, and the keys of the JSON ones."""
    parts: list[tuple[str, object]] = []
    for name, value in sorted(row.items()):
        if value is None:
            shape: object = None
        elif name in CATEGORICAL:
            shape = value
        elif isinstance(value, dict):
            shape = tuple(sorted(value))
        else:
            shape = type(value).__name__
        parts.append((name, shape))
    return tuple(parts)


async def check_shape(url: str, due: int) -> list[str]:
    """Compare the engine's rows (the due prospects, after the worker sent their first email)
    with a sample of the bulk rows. Returns the differences (none means same shape)."""
    database = Database(url)
    problems: list[str] = []
    try:
        async with database.engine.connect() as conn:
            engine_ids = (
                await conn.execute(text("SELECT id FROM prospects WHERE email LIKE 'due%'"))
            ).scalars()
            bulk_ids = (
                await conn.execute(
                    text(
                        "SELECT id FROM prospects WHERE email LIKE 'bulk%' "
                        "ORDER BY md5(id::text) LIMIT :due"
                    ),
                    {"due": due},
                )
            ).scalars()
            groups = {
                "engine": ",".join(map(str, engine_ids)),
                "bulk": ",".join(map(str, bulk_ids)),
            }
            for table, sql in SHAPE_SQL.items():
                seen: dict[str, Counter[tuple[tuple[str, object], ...]]] = {}
                for group, ids in groups.items():
                    rows = (await conn.execute(text(sql.format(ids=ids)))).mappings()
                    seen[group] = Counter(signature(dict(r)) for r in rows)
                if set(seen["engine"]) != set(seen["bulk"]):
                    only_bulk = set(seen["bulk"]) - set(seen["engine"])
                    only_engine = set(seen["engine"]) - set(seen["bulk"])
                    problems.append(
                        f"{table}: bulk rows shaped {sorted(map(str, only_bulk))[:2]} "
                        f"never made by the engine; engine rows shaped "
                        f"{sorted(map(str, only_engine))[:2]} missing from the bulk load"
                    )
            now = {"now": datetime.now(UTC)}
            for name, sql in CONSISTENCY_SQL.items():
                for group, ids in groups.items():
                    failed = (await conn.execute(text(sql.format(ids=ids)), now)).scalar_one()
                    if failed:
                        problems.append(f"{group} rows: {failed} fail '{name}'")
    finally:
        await database.close()
    return problems
