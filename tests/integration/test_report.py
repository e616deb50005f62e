"""`sequencer report` figures, on both databases, against a scenario whose answers are known:
eleven prospects run through a five-step sequence on a real (faulty) SMTP server, replying,
bouncing, unsubscribing and going out of office at known steps, with the inbox processor
acting on each message as the IMAP watcher would."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, time, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import (
    NEW_YORK,
    enroll_rows,
    load,
    move_to,
    people,
    person,
    project_at,
    touches,
)
from rich.console import Console
from servers.smtp import FaultySMTPServer
from test_inbox_actions import MAILBOX, bounce, reply
from test_sending import SECRET, sending

from sequencer.core.errors import NotFound
from sequencer.core.states import TaskOutcome, TouchState
from sequencer.runtime import reports
from sequencer.runtime.analytics import Report, build_report
from sequencer.runtime.engine import Engine
from sequencer.runtime.inbox import InboxProcessor
from sequencer.runtime.report_html import render_html
from sequencer.runtime.sender import Sender
from sequencer.store import touches as tq

REPORTED = """\
description: Five touches, for the report tests.
schedule:
  timezone: America/New_York
  hours: "09:00-17:00"
limits:
  min_gap: 1 day
  max_per_week: 5
pools:
  tips: [value-benchmark-report]
  stories: [value-case-study-freight]
steps:
  - id: intro
    email: cold-intro
  - id: value-1
    delay: 2 days
    email: {rotate: tips}
  - id: call
    delay: 1 day
    call: call-cold-first
    title: Call {{ prospect.first_name }}
  - id: value-2
    delay: 1 day
    email: {rotate: stories}
  - id: break-up
    delay: 2 days
    email: cold-break-up
"""
EVIL_NAME = "<script>alert('x')</script>"

# Who does what after which step. Every figure the tests expect follows from this table.
REACTIONS = [
    ("win1@alpha.example", "intro", "reply"),  # replies to the first email: attempt 1
    ("win2@bravo.example", "value-1", "reply"),  # attempt 2
    ("win3@charlie.example", "value-2", "reply"),  # the 4th step, but the 3rd email: attempt 3
    ("away@delta.example", "intro", "out-of-office"),  # paused a week, then resumed...
    ("away@delta.example", "break-up", "reply"),  # ...and won by the last email: attempt 4
    ("quit@foxtrot.example", "value-1", "unsubscribe"),
    ("dsn@kilo.example", "value-1", "bounce"),  # a bounce report arrives in the inbox
    ("manual@juliet.example", "intro", "stop"),  # the rep stops it by hand
    ("lost@india.example", "intro", "lose"),  # a bug cancels its next touch: nobody works it
    ("other@lima.example", "intro", "reply"),  # in the other sequence, `three`
]
PROSPECTS = [
    "win1@alpha.example",
    "win2@bravo.example",
    "win3@charlie.example",
    "away@delta.example",
    "reject-rcpt-echo@echo.example",  # refused at RCPT: failed, bounced
    "quit@foxtrot.example",
    "drop-after-data-golf@golf.example",  # connection lost after DATA: unknown
    "quiet@hotel.example",  # never answers; finishes the sequence
    "manual@juliet.example",
    "dsn@kilo.example",
]


@asynccontextmanager
async def scenario(database_url: str, root: Path) -> AsyncIterator[Engine]:
    """Run the scenario to its end; yield the engine to read the report from."""
    (root / "sequences").mkdir(parents=True, exist_ok=True)
    (root / "sequences" / "reported.yaml").write_text(REPORTED)
    with FaultySMTPServer() as smtp:
        async with sending(database_url, root, smtp.port, min_spacing="0 minutes") as (
            engine,
            sender,
        ):
            rows = [
                *people(*PROSPECTS),
                person("lost@india.example", line=20, first_name=EVIL_NAME),
            ]
            await enroll_rows(engine, "reported", rows)
            await enroll_rows(engine, "three", people("other@lima.example"))
            await _run(engine, sender, InboxProcessor(engine, secret=SECRET))
            yield engine


async def _run(engine: Engine, sender: Sender, processor: InboxProcessor) -> None:
    """Hour by hour for three weeks: send what is due, react as the table says, do the rep's
    tasks, resume pauses that ran out."""
    done: set[tuple[str, str, str]] = set()
    uid = 0
    end = engine.now() + timedelta(days=21)
    while engine.now() < end:
        async with engine.db.transaction() as s:
            ids = await tq.claim_due(s, engine.now(), 100)
        for touch_id in ids:
            await sender.send_touch(touch_id)
        for reaction in REACTIONS:
            email, step, action = reaction
            if reaction in done:
                continue
            sent = [
                t
                for t in await touches(engine, email)
                if t.step_id == step and t.state == TouchState.SENT.value
            ]
            if not sent:
                continue
            done.add(reaction)
            uid += 1
            await _react(engine, processor, email, action, sent[0].message_id or "", uid)
        for line in await reports.task_list(engine, owner=None, due_before=engine.now()):
            await engine.complete_task(line.task.id, TaskOutcome.VOICEMAIL)
        await engine.resume_due()
        # Hour by hour in working hours; nights are skipped (nothing goes out then).
        wall = engine.now().astimezone(NEW_YORK)
        if wall.hour >= 17:
            morning = datetime.combine(wall.date() + timedelta(days=1), time(9), NEW_YORK)
            move_to(engine, morning)
        else:
            move_to(engine, engine.now() + timedelta(hours=1))
    assert done == set(REACTIONS), set(REACTIONS) - done


async def _react(
    engine: Engine, processor: InboxProcessor, email: str, action: str, message_id: str, uid: int
) -> None:
    if action == "reply":
        raw = reply(email, message_id, f"Yes, let's talk ({uid})")
    elif action == "out-of-office":
        raw = (
            f"From: {email}\r\nTo: {MAILBOX}\r\nSubject: Out of Office: hello\r\n"
            f"Auto-Submitted: auto-replied\r\nIn-Reply-To: {message_id}\r\n"
            f"Message-ID: <ooo-{uid}@delta.example>\r\n\r\n"
            "I am out of the office and will be back on Monday, March 10, 2025.\r\n"
        ).encode()
    elif action == "unsubscribe":
        raw = (
            f"From: {email}\r\nTo: {MAILBOX}\r\nSubject: unsubscribe\r\n"
            f"Message-ID: <u-{uid}@foxtrot.example>\r\n\r\n\r\n"
        ).encode()
    elif action == "bounce":
        raw = bounce(email, message_id, "5.1.1")
    elif action == "stop":
        await engine.stop(email)
        return
    else:  # "lose": what a bug would do, leaving a live enrollment with nothing planned
        pending = [t for t in await touches(engine, email) if t.state == "scheduled"]
        assert len(pending) == 1
        async with engine.db.transaction() as s:
            await tq.set_touch_state(s, [pending[0].id], TouchState.CANCELLED, engine.now())
        return
    handled = await processor.process(MAILBOX, "INBOX", 1, uid, raw)
    assert handled.enrollments or action == "unsubscribe", handled


def step_row(report: Report, sequence: str, step: str) -> dict[str, object]:
    figures = next(q for q in report.sequences if q.name == sequence)
    found = next(s for s in figures.steps if s.step == step)
    return found.as_dict()


async def test_every_figure_matches_the_scenario(database_url: str, tmp_path: Path) -> None:
    async with scenario(database_url, tmp_path) as engine:
        report = await build_report(engine, "reported")
        everything = await build_report(engine)
        with pytest.raises(NotFound, match=r"did you mean 'reported'\?"):
            await build_report(engine, "reportd")
        unused = await build_report(engine, "post-sale-thank-you")
        # The file is deleted: the figures still come from the database.
        (tmp_path / "sequences" / "reported.yaml").unlink()
        without_file = Engine(engine.db, load(project_at(tmp_path)), clock=engine.clock)
        orphan = await build_report(without_file, "reported")

    assert [q.name for q in report.sequences] == ["reported"]
    seq = report.sequences[0]
    # Enrollments: 3 stopped by replies, 2 bounced, 1 unsubscribed, 1 stopped by hand; quiet
    # and away finished (away's reply came after the last step: a reply, but no stop); the
    # unknown one and the lost one are still active.
    assert seq.enrollments == 11
    assert dict(seq.states) == {"active": 2, "paused": 0, "finished": 2, "stopped": 7}
    assert dict(seq.stop_reasons) == {"replied": 3, "bounced": 2, "manual": 1, "unsubscribed": 1}
    assert seq.contacted == 10  # everyone but the refused address (the unknown one may have it)
    assert seq.sent == 9 + 6 + 3 + 2
    assert seq.signals.as_dict() == {
        "replied": 4,
        "bounced": 2,
        "unsubscribed": 1,
        "out_of_office": 1,
    }
    assert seq.reply_rate == pytest.approx(4 / 10)

    # Per step, in the sequence's order.
    assert [s.step for s in seq.steps] == ["intro", "value-1", "call", "value-2", "break-up"]
    intro = step_row(report, "reported", "intro")
    assert {k: intro[k] for k in ("sent", "replied", "bounced", "out_of_office")} == {
        "sent": 9,
        "replied": 1,
        "bounced": 1,  # refused at RCPT, attributed to the touch that failed
        "out_of_office": 1,
    }
    assert (intro["failed"], intro["unknown"], intro["reply_rate"]) == (1, 1, round(1 / 9, 4))
    value_1 = step_row(report, "reported", "value-1")
    assert {k: value_1[k] for k in ("sent", "replied", "unsubscribed", "bounced")} == {
        "sent": 6,
        "replied": 1,
        "unsubscribed": 1,  # no touch named in the request: the last email before it
        "bounced": 1,  # the bounce report names value-1's Message-ID
    }
    assert value_1["cancelled"] == 3  # win1 replied, manual stopped, lost's "bug"
    assert value_1["content"] == "rotate: tips"
    call = step_row(report, "reported", "call")
    assert (call["channel"], call["sent"], call["done"], call["cancelled"]) == ("call", 0, 3, 3)
    assert call["reply_rate"] is None  # nothing sent: no rate, not 0%
    value_2 = step_row(report, "reported", "value-2")
    assert (value_2["sent"], value_2["replied"]) == (3, 1)
    break_up = step_row(report, "reported", "break-up")
    assert (break_up["sent"], break_up["replied"], break_up["cancelled"]) == (2, 1, 1)
    assert all(s.pending == 0 for s in seq.steps)

    # Replies by attempt: the email ordinal, not the step's place (value-2 is step 4).
    assert [(a.attempt, a.replies) for a in seq.replies_by_attempt] == [
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 1),
    ]
    assert report.as_dict()["replies_after_first_email"] == 0.75

    # Templates: sent and replied per template; pool templates are value-add.
    templates = {t.template: t for t in report.templates}
    assert {n: (t.sent, t.replied) for n, t in templates.items()} == {
        "cold-intro": (9, 1),
        "value-benchmark-report": (6, 1),
        "value-case-study-freight": (3, 1),
        "cold-break-up": (2, 1),
    }
    assert templates["value-case-study-freight"].value_add
    assert not templates["cold-intro"].value_add
    assert report.templates[0].template == "cold-break-up"  # 50%, the best rate first

    # Leads nobody works: the lost one and the one waiting on an unknown delivery.
    idle = {lead.email: lead for lead in report.idle}
    assert report.idle_total == 2
    assert set(idle) == {"lost@india.example", "drop-after-data-golf@golf.example"}
    assert "(value-1) is cancelled; nothing comes after it" in idle["lost@india.example"].why
    assert "unknown" in idle["drop-after-data-golf@golf.example"].why

    # Touches that need a human, with what to do.
    assert dict(report.stuck_totals) == {"failed": 1, "unknown": 1}
    stuck = {s.state: s for s in report.stuck}
    assert stuck["failed"].email == "reject-rcpt-echo@echo.example"
    assert stuck["failed"].error.startswith("550")
    assert "refused the address" in stuck["failed"].todo
    assert stuck["unknown"].step == "intro"
    assert "Sent folder of ana.reyes@northwind.example" in stuck["unknown"].todo
    assert stuck["unknown"].message_id and stuck["unknown"].message_id in stuck["unknown"].todo

    # The whole report adds the other sequence, and its reply to the intro template.
    assert [q.name for q in everything.sequences] == ["reported", "three"]
    assert everything.replied == 5
    assert {t.template: (t.sent, t.replied) for t in everything.templates}["cold-intro"] == (
        10,
        2,
    )
    assert everything.replies_by_attempt[0].replies == 2  # win1 and other: the first email

    # A sequence of the project nobody is enrolled in: its steps, all zero.
    assert unused.sequences[0].enrollments == 0
    assert unused.sequences[0].steps and all(s.sent == 0 for s in unused.sequences[0].steps)
    assert unused.idle_total == 0 and not unused.stuck

    (gone,) = orphan.sequences
    assert not gone.in_project and gone.description == ""
    # Same steps in the same order and the same figures; only the content needs the file.
    assert [s.as_dict() for s in gone.steps] == [{**s.as_dict(), "content": ""} for s in seq.steps]
    assert all(s.in_sequence for s in gone.steps)
    assert gone.signals == seq.signals and gone.replies_by_attempt == seq.replies_by_attempt

    _check_renderings(report)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _check_renderings(report: Report) -> None:
    from sequencer.cli.report import render_text

    out = io.StringIO()
    render_text(report, Console(file=out, width=160, color_system=None))
    text = out.getvalue()
    assert "reported" in text and "intro" in text and "value-1" in text
    assert "lost@india.example" in text and "drop-after-data-golf@golf.example" in text
    assert "40%" in text  # the sequence's reply rate

    page = render_html(report)
    parser = _Collect()
    parser.feed(page)
    assert "svg" in parser.tags and "table" in parser.tags
    assert "script" not in parser.tags  # the prospect's name is data, never markup
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    joined = " ".join(parser.text)
    assert "Replies by attempt" in joined and "lost@india.example" in joined
