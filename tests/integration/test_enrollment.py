"""Enrolling prospects from a file: bad rows are reported with their line and reason while the
rest go in, re-running changes nothing, concurrent imports never double up, and the first
touch is due at the right local time. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
from helpers import (
    OTHER_MAILBOX,
    OWNER,
    enroll_rows,
    enrollment,
    enrollments,
    local,
    make_project,
    move_to,
    next_touch,
    people,
    person,
    prospect,
    running_engine,
    table_counts,
    task_of,
    touches,
    write_csv,
)
from sqlalchemy import func, select, text

from sequencer.core.errors import ConfigError
from sequencer.runtime.enrollment import EnrollReport, enroll, read_csv
from sequencer.settings import Settings
from sequencer.store.models import Enrollment, Prospect, SequenceRecord, Touch

HEADER = ["email", "first_name", "company", "timezone", "industry"]

INDUSTRY_NOTE = """\
---
subject: "Volume planning in {{ prospect.industry }}"
name: Industry note
kind: email
---
Hi {{ prospect.first_name | default("there") }},

Most {{ prospect.industry }} teams plan labor from last year's volume.

{{ sender.signature }}

{{ footer }}
"""

INDUSTRY_SEQUENCE = """\
description: One note that names the prospect's industry.
schedule:
  timezone: prospect
  fallback_timezone: America/New_York
  days: weekdays
  hours: "09:00-17:00"
fields: [industry]
steps:
  - id: note
    delay: immediately
    email: industry-note
  - id: break-up
    delay: 3 business days
    email: cold-break-up
"""

SHORT = """\
description: {description}
schedule:
  timezone: prospect
  fallback_timezone: America/New_York
  days: weekdays
  hours: "09:00-17:00"
mailbox: {mailbox}
exclusive: {exclusive}
steps:
  - id: hello
    delay: immediately
    email: customer-thank-you
  - id: guide
    delay: 2 business days
    email: customer-onboarding-guide
"""


def short_sequence(description: str, *, exclusive: bool = False, mailbox: str = "owner") -> str:
    return SHORT.format(description=description, exclusive=str(exclusive).lower(), mailbox=mailbox)


def by_line(report: EnrollReport) -> dict[int, str]:
    return {r.line: r.reason for r in report.skipped}


# --- bad rows -------------------------------------------------------------------------------


async def test_bad_rows_are_reported_by_line_and_the_rest_enrolled(
    database_url: str, tmp_path: Path
) -> None:
    project = make_project(
        tmp_path / "project",
        {"industry-intro": INDUSTRY_SEQUENCE},
        templates={"industry-note": INDUSTRY_NOTE},
    )
    csv_path = write_csv(
        tmp_path / "prospects.csv",
        HEADER,
        [
            ["dana@acme.example", "Dana", "Acme", "America/New_York", "freight"],  # line 2
            ["dana.at.acme.example", "Dana", "Acme", "", "freight"],  # 3: no @
            ["Dana@Acme.example", "Dana K.", "Acme", "", "freight"],  # 4: same as line 2
            ["blocked@acme.example", "Bo", "Acme", "", "freight"],  # 5: suppressed address
            ["eve@blocked.example", "Eve", "Blocked", "", "3PL"],  # 6: suppressed domain
            ["old@acme.example", "Olu", "Acme", "", "freight"],  # 7: already enrolled
            ["ned@globex.example", "Ned", "Globex", "", ""],  # 8: no industry
            ["lee@globex.example", "Lee", "Globex", "Europe/Berlin", "grocery"],  # 9
        ],
    )
    async with running_engine(database_url, project) as engine:
        await engine.suppress("blocked@acme.example")
        await engine.suppress("@blocked.example")
        await enroll_rows(engine, "industry-intro", [person("old@acme.example", industry="x")])

        report = await enroll(engine, "industry-intro", read_csv(csv_path), owner=OWNER)

        assert (report.rows, report.enrolled) == (8, 2)
        reasons = by_line(report)
        assert sorted(reasons) == [3, 4, 5, 6, 7, 8]
        assert reasons[3].startswith("invalid email 'dana.at.acme.example': missing @")
        assert reasons[4] == "duplicate: same email as line 2"
        assert reasons[5] == "suppressed: blocked@acme.example (manual)"
        assert reasons[6] == "suppressed: @blocked.example (manual)"
        assert reasons[7] == "already enrolled: active in this sequence"
        assert reasons[8] == "missing field: the templates need industry"
        assert {r.email for r in report.skipped if r.line != 3} == {
            "dana@acme.example",
            "blocked@acme.example",
            "eve@blocked.example",
            "old@acme.example",
            "ned@globex.example",
        }
        assert report.as_dict()["skipped_by_reason"] == {
            "invalid email 'dana.at.acme.example'": 1,
            "duplicate": 1,
            "suppressed": 2,
            "already enrolled": 1,
            "missing field": 1,
        }

        # The valid rows went in, each with its first touch planned; the bad ones left nothing.
        for email in ("dana@acme.example", "lee@globex.example"):
            assert (await enrollment(engine, email, "industry-intro")).state == "active"
            assert (await next_touch(engine, email)).step_id == "note"
        assert (await prospect(engine, "lee@globex.example")).fields == {"industry": "grocery"}
        async with engine.db.transaction() as s:
            stored = set((await s.execute(select(Prospect.email))).scalars())
        assert stored == {"dana@acme.example", "lee@globex.example", "old@acme.example"}
        assert (await prospect(engine, "dana@acme.example")).first_name == "Dana"


def test_a_file_without_an_email_column_is_refused_up_front(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", ["Name", "Mail Adress"], [["Dana", "d@acme.example"]])
    with pytest.raises(ConfigError, match=r"p\.csv:1: no email column"):
        list(read_csv(path))


# --- re-running -----------------------------------------------------------------------------


async def test_re_running_the_same_file_changes_nothing(database_url: str, tmp_path: Path) -> None:
    emails = [f"rep{i}@acme{i % 3}.example" for i in range(12)]
    csv_path = write_csv(
        tmp_path / "prospects.csv",
        ["Email", "First Name", "Company"],
        [[e, f"P{i}", f"Acme {i % 3}"] for i, e in enumerate(emails)],
    )
    async with running_engine(database_url, settings=Settings(batch_size=5)) as engine:
        first = await enroll(engine, "cold-outbound", read_csv(csv_path), owner=OWNER)
        assert (first.rows, first.enrolled, first.skipped) == (12, 12, [])
        await engine.stop(emails[0])
        before = await table_counts(engine.db)
        assert before["enrollments"] == 12
        assert before["touches"] == 12

        move_to(engine, local(2025, 3, 5, 10))
        again = await enroll(engine, "cold-outbound", read_csv(csv_path), owner=OWNER)

        assert (again.rows, again.enrolled, len(again.skipped)) == (12, 0, 12)
        reasons = by_line(again)
        assert reasons[2] == "already enrolled: stopped (manual) in this sequence"
        assert all(
            reasons[line] == "already enrolled: active in this sequence" for line in range(3, 14)
        )
        assert await table_counts(engine.db) == before
        # The stopped prospect stays stopped: a re-run is not a way back in.
        assert [e.state for e in await enrollments(engine, emails[0])] == ["stopped"]


async def test_common_header_spellings(database_url: str, tmp_path: Path) -> None:
    csv_path = write_csv(
        tmp_path / "export.csv",
        ["Email Address", "First Name", "Last Name", "Company Name", "Job Title", "Time Zone"],
        [
            ["Dana.Kim@Acme.example", "Dana", "Kim", "Acme Freight", "VP Ops", "America/Chicago"],
            ["lee@globex.example", "Lee", "Park", "Globex", "COO", "America/New_York"],
        ],
    )
    # Tuesday 09:00 in New York is 08:00 in Chicago, before cold-outbound's 08:30 opening.
    async with running_engine(database_url, start=local(2025, 3, 4, 9, 0)) as engine:
        report = await enroll(engine, "cold-outbound", read_csv(csv_path), owner=OWNER)
        assert (report.enrolled, report.skipped) == (2, [])

        dana = await prospect(engine, "dana.kim@acme.example")
        assert (dana.first_name, dana.last_name, dana.company, dana.title, dana.timezone) == (
            "Dana",
            "Kim",
            "Acme Freight",
            "VP Ops",
            "America/Chicago",
        )
        assert dana.domain == "acme.example"
        # Each first email waits for the prospect's own window, read from "Time Zone".
        intro = await next_touch(engine, "dana.kim@acme.example")
        assert intro.due_at == local(2025, 3, 4, 8, 30, "America/Chicago")
        assert (await next_touch(engine, "lee@globex.example")).due_at == local(2025, 3, 4, 9)

        # "First Name" and "Company Name" reach the rep's call script.
        await engine.complete_touch(intro.id)
        task = await task_of(engine, await next_touch(engine, "dana.kim@acme.example"))
        assert task.title == "Call Dana at Acme Freight"
        assert "Hi Dana," in task.script


# --- dry run --------------------------------------------------------------------------------


async def test_a_dry_run_reports_what_would_happen_and_writes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    csv_path = write_csv(
        tmp_path / "prospects.csv",
        ["email", "first_name"],
        [
            ["dana@acme.example", "Dana"],
            ["nobody", "No"],
            ["lee@globex.example", "Lee"],
            ["ola@blocked.example", "Ola"],
            ["kai@acme.example", "Kai"],
        ],
    )
    async with running_engine(database_url, settings=Settings(batch_size=2)) as engine:
        await engine.suppress("@blocked.example")
        await enroll_rows(engine, "cold-outbound", [person("kai@acme.example")])
        before = await table_counts(engine.db)

        dry = await enroll(engine, "cold-outbound", read_csv(csv_path), owner=OWNER, dry_run=True)

        assert dry.dry_run
        assert (dry.rows, dry.enrolled) == (5, 2)
        assert by_line(dry) == {
            3: "invalid email 'nobody': missing @",
            5: "suppressed: @blocked.example (manual)",
            6: "already enrolled: active in this sequence",
        }
        assert await table_counts(engine.db) == before
        assert await enrollments(engine, "dana@acme.example") == []

        real = await enroll(engine, "cold-outbound", read_csv(csv_path), owner=OWNER)
        assert (real.enrolled, by_line(real)) == (dry.enrolled, by_line(dry))
        after = await table_counts(engine.db)
        assert after["enrollments"] == before["enrollments"] + 2


# --- exclusive sequences --------------------------------------------------------------------


async def test_exclusive_sequences_keep_prospects_to_themselves(
    database_url: str, tmp_path: Path
) -> None:
    project = make_project(
        tmp_path / "project", {"vip": short_sequence("Hand-picked accounts.", exclusive=True)}
    )
    async with running_engine(database_url, project) as engine:
        await enroll_rows(engine, "vip", people("vip@acme.example"))
        await enroll_rows(engine, "cold-outbound", people("cold@acme.example"))

        # Live in the exclusive sequence: no other sequence may take them...
        into_cold = await enroll_rows(
            engine,
            "cold-outbound",
            people("vip@acme.example", "new@acme.example"),
            expect_all=False,
        )
        assert by_line(into_cold) == {2: "in an exclusive sequence: vip"}
        # ...and the exclusive sequence takes nobody who is live elsewhere.
        into_vip = await enroll_rows(
            engine, "vip", people("cold@acme.example", "other@acme.example"), expect_all=False
        )
        assert by_line(into_vip) == {
            2: "in another sequence: cold-outbound (this one is exclusive)"
        }
        assert [e.state for e in await enrollments(engine, "vip@acme.example")] == ["active"]
        assert len(await enrollments(engine, "cold@acme.example")) == 1

        # Once the exclusive enrollment has ended, the prospect is free again.
        await engine.stop("vip@acme.example")
        await enroll_rows(engine, "cold-outbound", people("vip@acme.example"))
        assert (await enrollment(engine, "vip@acme.example", "cold-outbound")).state == "active"


# --- concurrent imports ---------------------------------------------------------------------


async def test_two_imports_at_once_never_double_up(database_url: str) -> None:
    first_file = [f"p{i:02d}@acme{i % 4}.example" for i in range(0, 30)]
    second_file = [f"p{i:02d}@acme{i % 4}.example" for i in reversed(range(15, 45))]
    settings = Settings(batch_size=7)
    async with (
        running_engine(database_url, settings=settings) as one,
        running_engine(database_url, settings=settings) as two,
    ):
        reports = await asyncio.gather(
            enroll(one, "cold-outbound", people(*first_file), owner=OWNER),
            enroll(two, "cold-outbound", people(*second_file), owner=OTHER_MAILBOX),
        )

        everyone = set(first_file) | set(second_file)
        async with one.db.transaction() as s:
            counts = {
                model.__tablename__: (
                    await s.execute(select(func.count()).select_from(model))
                ).scalar_one()
                for model in (Prospect, Enrollment, Touch, SequenceRecord)
            }
            doubled = {
                "prospects": (
                    await s.execute(
                        select(Prospect.email).group_by(Prospect.email).having(func.count() > 1)
                    )
                ).all(),
                "enrollments": (
                    await s.execute(
                        select(Enrollment.prospect_id, Enrollment.sequence_id)
                        .group_by(Enrollment.prospect_id, Enrollment.sequence_id)
                        .having(func.count() > 1)
                    )
                ).all(),
                "touches": (
                    await s.execute(
                        select(Touch.enrollment_id, Touch.step_id)
                        .group_by(Touch.enrollment_id, Touch.step_id)
                        .having(func.count() > 1)
                    )
                ).all(),
            }
        assert doubled == {"prospects": [], "enrollments": [], "touches": []}
        assert counts == {
            "prospects": 45,
            "enrollments": 45,
            "touches": 45,
            "sequences": 3,
        }

        enrolled: list[str] = []
        for report, rows in zip(reports, (first_file, second_file), strict=True):
            assert report.rows == len(rows)
            assert report.enrolled + len(report.skipped) == len(rows)
            assert {r.reason for r in report.skipped} <= {
                "already enrolled: active in this sequence"
            }
            skipped = {r.email for r in report.skipped}
            enrolled += [e for e in rows if e not in skipped]
        # Every prospect went in exactly once, by one import or the other.
        assert sorted(enrolled) == sorted(everyone)
        for email in (first_file[0], second_file[0], "p20@acme0.example"):
            assert (await next_touch(one, email)).step_id == "intro"


# --- the first touch ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "zone", "due"),
    [
        # Inside the window: due at the moment of enrollment, to the second.
        (local(2025, 3, 4, 10, 17), "America/New_York", local(2025, 3, 4, 10, 17)),
        # 07:17 in Los Angeles: at the 08:30 opening there.
        (
            local(2025, 3, 4, 10, 17),
            "America/Los_Angeles",
            local(2025, 3, 4, 8, 30, "America/Los_Angeles"),
        ),
        # Already after midnight in Tokyo: Wednesday 08:30 Tokyo time.
        (local(2025, 3, 4, 10, 17), "Asia/Tokyo", local(2025, 3, 5, 8, 30, "Asia/Tokyo")),
        # Lunch gap (11:30-13:30): at 13:30.
        (local(2025, 3, 4, 12, 0), "America/New_York", local(2025, 3, 4, 13, 30)),
        # Friday evening before Presidents' Day (a US holiday): Tuesday 08:30.
        (local(2025, 2, 14, 17, 0), "America/New_York", local(2025, 2, 18, 8, 30)),
    ],
    ids=["inside-window", "before-opening", "next-day-abroad", "lunch-gap", "weekend-holiday"],
)
async def test_the_first_touch_is_due_now_or_at_the_next_opening(
    database_url: str, now: datetime, zone: str, due: datetime
) -> None:
    async with running_engine(database_url, start=now) as engine:
        await enroll_rows(engine, "cold-outbound", [person("dana@acme.example", timezone=zone)])
        intro = await next_touch(engine, "dana@acme.example")
        assert (intro.step_id, intro.state, intro.template) == ("intro", "scheduled", "cold-intro")
        assert intro.due_at == due
        assert intro.due_at >= engine.now()


async def test_speed_to_lead_answers_at_once_even_at_night(database_url: str) -> None:
    saturday_night = local(2025, 3, 8, 23, 40)
    async with running_engine(database_url, start=saturday_night) as engine:
        await enroll_rows(engine, "inbound-demo-request", people("dana@acme.example"))
        reply = await next_touch(engine, "dana@acme.example")
        assert (reply.step_id, reply.due_at) == ("instant-reply", saturday_night)
        # The call that follows waits for Monday's opening.
        await engine.complete_touch(reply.id)
        call = await next_touch(engine, "dana@acme.example")
        assert (call.step_id, call.due_at) == ("call", local(2025, 3, 10, 8, 0))


# --- mailboxes ------------------------------------------------------------------------------


async def test_a_mailbox_list_spreads_prospects_and_keeps_each_on_one(
    database_url: str, tmp_path: Path
) -> None:
    mailboxes = f"[{OWNER}, {OTHER_MAILBOX}]"
    project = make_project(
        tmp_path / "project",
        {
            "spread": short_sequence("Spread over two mailboxes.", mailbox=mailboxes),
            "spread-again": short_sequence("The same two mailboxes.", mailbox=mailboxes),
        },
    )
    emails = [f"buyer{i}@company{i}.example" for i in range(40)]
    async with running_engine(database_url, project) as engine:
        await enroll_rows(engine, "spread", people(*emails), owner="lead.rep@northwind.example")
        await enroll_rows(engine, "spread-again", people(*emails[:10]))
        await enroll_rows(
            engine, "cold-outbound", people("pinned@acme.example"), mailbox=OTHER_MAILBOX
        )

        first = {e: (await enrollment(engine, e, "spread")).mailbox for e in emails}
        used = list(first.values())
        assert set(used) == {OWNER, OTHER_MAILBOX}
        assert min(used.count(OWNER), used.count(OTHER_MAILBOX)) >= 10
        # The same prospect always writes with the same mailbox, whichever sequence.
        for email in emails[:10]:
            assert (await enrollment(engine, email, "spread-again")).mailbox == first[email]
        # The enrolling rep still owns them; an explicit mailbox wins over the sequence's.
        assert (await enrollment(engine, emails[0], "spread")).owner == "lead.rep@northwind.example"
        assert (await enrollment(engine, "pinned@acme.example")).mailbox == OTHER_MAILBOX
        assert len(await touches(engine, emails[0])) == 2


#: PostgreSQL triggers that make every prospect and enrollment insert take 2 ms.
SLOW_INSERTS = (
    """CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_sleep(0.002);
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER slow_prospects BEFORE INSERT ON prospects
    FOR EACH ROW EXECUTE FUNCTION slow_insert()""",
    """CREATE TRIGGER slow_enrollments BEFORE INSERT ON enrollments
    FOR EACH ROW EXECUTE FUNCTION slow_insert()""",
)


async def test_two_imports_of_the_same_rows_in_opposite_orders_both_finish(
    database_url: str,
) -> None:
    emails = [f"p{i:02d}@acme.example" for i in range(60)]
    async with (
        running_engine(database_url) as one,
        running_engine(database_url) as two,
    ):
        if not one.db.is_sqlite:
            # Each row insert takes a moment, so both multi-row INSERTs are surely in flight
            # together: rows taken in opposite orders would deadlock.
            async with one.db.engine.begin() as connection:
                for statement in SLOW_INSERTS:
                    await connection.execute(text(statement))
        # New prospects, and then the same (now existing) prospects into another sequence.
        for sequence in ("cold-outbound", "post-sale-thank-you"):
            reports = await asyncio.gather(
                enroll(one, sequence, people(*emails), owner=OWNER),
                enroll(two, sequence, people(*reversed(emails)), owner=OWNER),
            )
            assert sorted(r.enrolled for r in reports) == [0, 60]
        counts = await table_counts(one.db)
        assert (counts["prospects"], counts["enrollments"], counts["touches"]) == (60, 120, 120)
