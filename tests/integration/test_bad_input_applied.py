"""Bad input against a real database, on both backends: generated CSV rows are each enrolled
whole or not at all; generated inbound mail never crashes the inbox processor and changes an
enrollment only when its classification says so; and a touch whose template cannot render at
send time fails alone, with the template and field named, while the runner goes on sending."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
from helpers import (
    OWNER,
    TUESDAY_10AM,
    enrollments,
    person,
    project_at,
    running_engine,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers.smtp import RecordingSMTPServer
from sqlalchemy import func, select
from test_crash import NOTE, SEQUENCE, TEMPLATE, one_email_project

from sequencer.core.inbound import InboundKind
from sequencer.core.prospects import map_headers, parse_row
from sequencer.runtime.dispatcher import LocalRunner
from sequencer.runtime.engine import Engine
from sequencer.runtime.enrollment import enroll
from sequencer.runtime.inbox import InboxProcessor
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Sender
from sequencer.store.models import Enrollment, Event, Prospect, Touch

REPO = Path(__file__).resolve().parents[2]
SECRET = b"bad-input-secret-0123456789abcdef"
#: Each example talks to the database many times: fewer examples than the unit properties.
DATABASE_EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: A fresh tag per example keeps the examples apart in one database.
TAGS = itertools.count()


# --- CSV rows: whole or not at all -------------------------------------------------------------

HEADER = ["email", "first_name", "company", "timezone", "industry"]
CELLS = {
    "email": ["{tag}.dana@globex.example", "{tag}.ben@initech.example", "not-an-email", "", "a@b"],
    "first_name": ["Dana", "", "Ben\r\nBcc: x@evil.example", "x" * 1001],
    "company": ["Globex", "", "Initech"],
    "timezone": ["America/New_York", "EST", "Mars/Olympus", ""],
    "industry": ["freight", "", "3PL"],
}


@st.composite
def prospect_rows(draw: st.DrawFn) -> list[list[str]]:
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        rows.append([draw(st.sampled_from(CELLS[c]) | st.text(max_size=6)) for c in HEADER])
    return rows


async def prospect_state(engine: Engine, email: str) -> tuple[int, int, int, int]:
    """(prospects, enrollments, touches, enrolled events) stored for one email."""
    async with engine.db.transaction() as s:
        ids = list((await s.execute(select(Prospect.id).where(Prospect.email == email))).scalars())
        if not ids:
            return 0, 0, 0, 0

        async def count(model: type[Enrollment] | type[Touch] | type[Event], *where: object) -> int:
            statement = select(func.count()).select_from(model).where(*where)  # type: ignore[arg-type]
            return int((await s.execute(statement)).scalar_one())

        return (
            len(ids),
            await count(Enrollment, Enrollment.prospect_id.in_(ids)),
            await count(Touch, Touch.prospect_id.in_(ids)),
            await count(Event, Event.prospect_id.in_(ids), Event.kind == "enrolled"),
        )


async def test_each_csv_row_is_enrolled_whole_or_not_at_all(database_url: str) -> None:
    loop = asyncio.get_running_loop()
    async with running_engine(database_url, project_at(REPO)) as engine:

        @DATABASE_EXAMPLES
        @given(prospect_rows())
        def run(rows: list[list[str]]) -> None:
            tag = next(TAGS)
            cells = [[cell.replace("{tag}", f"t{tag}") for cell in row] for row in rows]
            asyncio.run_coroutine_threadsafe(check(cells), loop).result()

        async def check(cells: list[list[str]]) -> None:
            mapping = map_headers(HEADER)
            parsed = [parse_row(mapping, row, line) for line, row in enumerate(cells, start=2)]
            report = await enroll(engine, "cold-outbound", parsed, owner=OWNER)
            assert report.rows == len(cells)
            assert report.enrolled + len(report.skipped) == len(cells)
            skipped_lines = {r.line for r in report.skipped}
            for row in report.skipped:
                assert row.reason.strip(), row
            enrolled = {
                p.email: p.line
                for p in parsed
                if not hasattr(p, "reason") and p.line not in skipped_lines
            }
            assert len(enrolled) == report.enrolled
            for email in enrolled:
                # Whole: the prospect, one enrollment, its first touch, the enrolled event.
                prospects, enrolled_in, touches, events = await prospect_state(engine, email)
                assert (prospects, enrolled_in, events) == (1, 1, 1), email
                assert touches >= 1, email
            for row in report.skipped:
                if row.email and row.email not in enrolled:
                    # Not at all: nothing of a refused row is stored.
                    assert await prospect_state(engine, row.email) == (0, 0, 0, 0), row

        await asyncio.to_thread(run)


# --- inbound mail: never a crash, no change unless classified so -------------------------------

FRAGMENTS = [
    b"From: {who}\r\n", b"From: Someone <nobody@elsewhere.example>\r\n", b"From: \r\n",
    b"To: ana.reyes@northwind.example\r\n", b"Subject: Re: quick question\r\n",
    b"Subject: Automatic reply: out of office\r\n", b"Subject: =?utf-8?b?!!!?=\r\n",
    b"Auto-Submitted: auto-replied\r\n", b"In-Reply-To: <nothing@northwind.example>\r\n",
    b"References: <<<>>>\r\n", b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Type: text/plain; charset=klingon\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"\r\n", b"Thanks, Thursday works.\r\n", b"I am out of the office until March 10.\r\n",
    b"Please unsubscribe me.\r\n", b"--x\r\n", b"\xff\xfe\x00", b"\r\n.\r\n", b"=?=\r\n",
    b"Delivery Status Notification (Failure)\r\n", b"550 5.1.1 <{who}>: user unknown\r\n",
]  # fmt: skip
ACTING = {
    InboundKind.REPLY,
    InboundKind.OUT_OF_OFFICE,
    InboundKind.UNSUBSCRIBE,
    InboundKind.BOUNCE,
}


@st.composite
def inbound_mail(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=40), max_size=12))
    return b"".join(parts)


async def snapshot(engine: Engine) -> dict[int, tuple[str, str | None, object]]:
    async with engine.db.transaction() as s:
        rows = await s.execute(
            select(Enrollment.id, Enrollment.state, Enrollment.stop_reason, Enrollment.paused_until)
        )
        return {row[0]: (row[1], row[2], row[3]) for row in rows.all()}


async def test_random_inbound_mail_never_crashes_nor_acts_unless_classified(
    database_url: str,
) -> None:
    loop = asyncio.get_running_loop()
    async with running_engine(database_url, project_at(REPO)) as engine:
        processor = InboxProcessor(engine, secret=SECRET)
        uids = itertools.count(1)

        @DATABASE_EXAMPLES
        @given(inbound_mail())
        def run(raw: bytes) -> None:
            asyncio.run_coroutine_threadsafe(check(raw), loop).result()

        async def check(raw: bytes) -> None:
            who = f"t{next(TAGS)}.dana@globex.example"
            await enroll(engine, "cold-outbound", [person(who, industry="freight")], owner=OWNER)
            before = await snapshot(engine)
            handled = await processor.process(
                OWNER, "INBOX", 1, next(uids), raw.replace(b"{who}", who.encode())
            )
            after = await snapshot(engine)
            changed = {i for i in before if before[i] != after[i]}
            if changed:
                assert handled.classification.kind in ACTING, (handled, raw)
                assert not handled.duplicate and handled.action != "recorded", handled

        await asyncio.to_thread(run)


# --- one template that cannot render does not stop the runner ----------------------------------

NEEDS_INDUSTRY = """\
---
subject: "A note for {{ prospect.first_name | default('you') }}"
---
Hi {{ prospect.first_name | default("there") }},

How is {{ prospect.industry }} treating you?

{{ footer }}
"""


async def wait_for(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.05)


async def touch_states(engine: Engine) -> dict[str, tuple[str, str | None]]:
    async with engine.db.transaction() as s:
        rows = await s.execute(
            select(Prospect.email, Touch.state, Touch.last_error).join(
                Prospect, Prospect.id == Touch.prospect_id
            )
        )
        return {email: (state, error) for email, state, error in rows.all()}


@pytest.mark.timeout(120)
async def test_a_touch_that_cannot_render_fails_alone_and_the_runner_goes_on(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    root = tmp_path / "project"
    project = one_email_project(root, smtp.port)
    # The sequence declares the field (optional to its authors), so validate passes.
    sequence_file = root / "sequences" / f"{SEQUENCE}.yaml"
    text = sequence_file.read_text(encoding="utf-8").replace("steps:", "fields: [industry]\nsteps:")
    sequence_file.write_text(text, encoding="utf-8")
    good = [f"p{i}@company{i}.example" for i in range(6)]
    bad = [f"q{i}@other{i}.example" for i in range(3)]
    async with running_engine(database_url, project) as engine:
        rows = [
            person(e, line=i + 2, timezone="UTC", industry="freight") for i, e in enumerate(good)
        ]
        rows += [person(e, line=i + 10, timezone="UTC") for i, e in enumerate(bad)]
        report = await enroll(engine, SEQUENCE, rows, owner=OWNER)
        assert report.enrolled == len(good) + len(bad)
    # Marketing edits the template after these prospects were enrolled: now it needs a field
    # three of them do not have.
    assert NOTE
    (root / "templates" / f"{TEMPLATE}.j2").write_text(NEEDS_INDUSTRY, encoding="utf-8")
    async with running_engine(database_url, project, start=TUESDAY_10AM) as engine:
        assert engine.catalog.config is not None
        boxes = Mailboxes(engine.catalog.config)
        runner = LocalRunner(engine, Sender(engine, boxes, secret=SECRET), poll=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:

            async def settled() -> bool:
                states = await touch_states(engine)
                return all(s in ("sent", "failed") for s, _ in states.values())

            await wait_for(settled)
            states = await touch_states(engine)
            for email in good:
                assert states[email][0] == "sent", (email, states[email])
            for email in bad:
                state, error = states[email]
                assert state == "failed", (email, state)
                assert f"templates/{TEMPLATE}.j2:" in (error or ""), error
                assert "industry" in (error or ""), error
                # The prospect stays enrolled: a broken email never silently ends the follow-up.
                (kept,) = await enrollments(engine, email)
                assert kept.state in ("active", "finished"), kept.state
            # Still running: a lead enrolled now goes out as well.
            assert not task.done()
            late = "late@newco.example"
            await enroll(
                engine, SEQUENCE, [person(late, timezone="UTC", industry="3PL")], owner=OWNER
            )
            runner.dispatcher.wakeup.set()

            async def late_sent() -> bool:
                return (await touch_states(engine)).get(late, ("", None))[0] == "sent"

            await wait_for(late_sent)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await boxes.close()
    received = {m.rcpt_tos[0] for m in smtp.messages}
    assert received == {*good, "late@newco.example"}
