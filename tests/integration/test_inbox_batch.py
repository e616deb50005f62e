"""A backlog processed a batch per transaction does what one message at a time does: the
lookups made once for the batch (known senders, accounts being worked) and the records written
together never change an outcome, on both databases."""

from __future__ import annotations

from pathlib import Path

from helpers import enroll_rows, enrollment, people
from servers.smtp import RecordingSMTPServer
from sqlalchemy import select
from test_inbox_actions import COMPANY_SEQUENCE, MAILBOX, bounce, inbox
from test_sending import send_due

from sequencer.core.prospects import ProspectRow
from sequencer.store import inbound as iq
from sequencer.store.models import InboundMessage


def plain(sender: str, subject: str, text: str, number: int, **headers: str) -> bytes:
    extra = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return (
        f"From: {sender}\r\nTo: {MAILBOX}\r\nSubject: {subject}\r\n"
        f"Message-ID: <m{number}@batch.example>\r\n{extra}\r\n{text}\r\n"
    ).encode()


async def test_a_batch_acts_as_one_message_at_a_time_would(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    (tmp_path / "sequences").mkdir(parents=True, exist_ok=True)
    (tmp_path / "sequences" / "account.yaml").write_text(COMPANY_SEQUENCE)
    async with inbox(database_url, tmp_path, smtp) as (engine, sender, processor):
        await enroll_rows(engine, "account", people("dana@globex.example", "kai@globex.example"))
        mo = ProspectRow(2, "mo@hooli.example", {"aliases": "mo.private@gmail.com"})
        await enroll_rows(engine, "three", [mo])
        await enroll_rows(engine, "three", people("lee@initech.example", "zed@umbrella.example"))
        await send_due(engine, sender)
        ids = {m.rcpt_tos[0]: m.parsed["Message-ID"] for m in smtp.wait_for(5)}
        # Recorded before the backlog is read: met again in it, it is a duplicate.
        seen_before = plain("news@vendor.example", "Weekly", "News.", 0, List_Id="<w.vendor>")
        await processor.process(MAILBOX, "INBOX", 1, 1, seen_before)
        zed = ids["zed@umbrella.example"]
        backlog = [
            (1, seen_before),
            (2, plain("news@vendor.example", "Weekly", "More news.", 2, List_Id="<w.vendor>")),
            # Never enrolled, writing from an account being worked in a company_reply sequence.
            (3, plain("Sam <sam@globex.example>", "Your note", "Let's talk next week.", 3)),
            (4, plain("Mo <mo.private@gmail.com>", "from my phone", "Call me tomorrow.", 4)),
            (5, bounce("zed@umbrella.example", zed, "4.2.2", "delayed")),
            (6, plain("lee@initech.example", "question", "Can you call me instead?", 6)),
            (7, bounce("zed@umbrella.example", zed, "4.2.2", "delayed").replace(b"<b-", b"<b2-")),
            (8, plain("Ivy <ivy@nowhere.example>", "hello", "Who are you?", 8)),
            # Third transient bounce in a week: counts the two before it in the same batch.
            (9, bounce("zed@umbrella.example", zed, "4.2.2", "delayed").replace(b"<b-", b"<b3-")),
        ]
        handled = []
        async with processor.batch(MAILBOX, "INBOX", 1, backlog) as batch:
            for uid, raw in backlog:
                handled.append(await processor.process(MAILBOX, "INBOX", 1, uid, raw))
                if uid == 4:  # records wait to be written together (a bounce flushes them)
                    assert [values["uid"] for values in batch.pending] == [2, 3, 4]
            assert batch.last_uid == 9
        assert [h.duplicate for h in handled] == [True] + [False] * 8
        assert [h.classification.kind.value for h in handled] == [
            "unrelated",
            "unrelated",
            "reply",
            "reply",
            "bounce",
            "reply",
            "bounce",
            "reply",
            "bounce",
        ]
        assert "someone at globex.example replied" in handled[2].action
        for email, state in [
            ("dana@globex.example", ("stopped", "account_replied")),
            ("kai@globex.example", ("stopped", "account_replied")),
            ("mo@hooli.example", ("stopped", "replied")),
            ("lee@initech.example", ("stopped", "replied")),
            ("zed@umbrella.example", ("stopped", "bounced")),
        ]:
            found = await enrollment(engine, email)
            assert (found.state, found.stop_reason) == state, email
        assert handled[4].action == handled[6].action == "recorded: temporary bounce"
        async with engine.db.transaction() as s:
            assert await iq.cursor(s, MAILBOX, "INBOX") == (1, 9)
            rows = (await s.execute(select(InboundMessage).order_by(InboundMessage.uid))).scalars()
            recorded = {row.uid: row for row in rows}
        assert sorted(recorded) == list(range(1, 10))
        assert recorded[1].details["reason"] and recorded[1].message_id == "<m0@batch.example>"
        assert recorded[4].enrollment_id == (await enrollment(engine, "mo@hooli.example")).id
        assert recorded[8].enrollment_id is None and recorded[8].sender == "ivy@nowhere.example"


async def test_a_failing_batch_leaves_nothing_behind(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with inbox(database_url, tmp_path, smtp) as (engine, _sender, processor):
        await enroll_rows(engine, "three", people("lee@initech.example"))
        backlog = [
            (1, plain("lee@initech.example", "question", "Call me?", 1)),
            (2, plain("news@vendor.example", "Weekly", "News.", 2, List_Id="<w.vendor>")),
        ]
        try:
            async with processor.batch(MAILBOX, "INBOX", 1, backlog):
                await processor.process(MAILBOX, "INBOX", 1, 1, backlog[0][1])
                raise ValueError("the second message cannot be digested")
        except ValueError:
            pass
        assert (await enrollment(engine, "lee@initech.example")).state == "active"
        async with engine.db.transaction() as s:
            assert await iq.cursor(s, MAILBOX, "INBOX") is None
            assert await iq.recent_messages(s) == []
        # Outside any batch, process() goes on in its own transaction.
        handled = await processor.process(MAILBOX, "INBOX", 1, 1, backlog[0][1])
        assert handled.action.startswith("stopped 1 enrollment")
