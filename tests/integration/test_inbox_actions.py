"""What inbound mail does to enrollments, on both databases: each message is classified,
matched and acted on together with the folder's cursor, exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from helpers import (
    enroll_rows,
    enrollment,
    enrollments,
    kinds,
    local,
    move_to,
    people,
    touches,
)
from servers.smtp import RecordingSMTPServer
from test_sending import SECRET, send_due, sending

from sequencer.core.prospects import ProspectRow
from sequencer.runtime.engine import Engine
from sequencer.runtime.inbox import InboxProcessor
from sequencer.runtime.sender import Sender
from sequencer.store import inbound as iq

MAILBOX = "ana.reyes@northwind.example"
COMPANY_SEQUENCE = """\
description: Stops when anyone at the account replies.
schedule:
  timezone: America/New_York
stop:
  company_reply: true
steps:
  - id: intro
    email: cold-intro
  - id: follow
    delay: 2 days
    email: value-benchmark-report
"""


def reply(sender: str, in_reply_to: str, text: str, subject: str = "Re: hello") -> bytes:
    return (
        f"From: {sender}\r\nTo: {MAILBOX}\r\nSubject: {subject}\r\n"
        f"Message-ID: <r-{abs(hash((sender, text)))}@x.example>\r\n"
        f"In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n"
        "Date: Tue, 04 Mar 2025 11:00:00 -0500\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{text}\r\n\r\nOn Tue, Ana wrote:\r\n> earlier text\r\n"
    ).encode()


@asynccontextmanager
async def inbox(
    database_url: str, root: Path, smtp: RecordingSMTPServer
) -> AsyncIterator[tuple[Engine, Sender, InboxProcessor]]:
    async with sending(database_url, root, smtp.port, min_spacing="0 minutes") as (
        engine,
        sender,
    ):
        yield engine, sender, InboxProcessor(engine, secret=SECRET)


async def test_a_reply_stops_every_enrollment_of_the_prospect(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with inbox(database_url, tmp_path, smtp) as (engine, sender, processor):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        await enroll_rows(engine, "post-sale-thank-you", people("dana@globex.example"))
        await send_due(engine, sender)
        message_id = smtp.wait_for(1)[0].parsed["Message-ID"]
        handled = await processor.process(
            MAILBOX,
            "INBOX",
            7,
            1,
            reply("Dana <dana@globex.example>", message_id, "Yes, Thursday?"),
        )
        assert handled.classification.kind.value == "reply"
        assert "stopped 2" in handled.action
        for each in await enrollments(engine, "dana@globex.example"):
            assert (each.state, each.stop_reason) == ("stopped", "replied")
        assert all(t.state != "scheduled" for t in await touches(engine, "dana@globex.example"))
        assert "replied" in await kinds(engine, "dana@globex.example")
        async with engine.db.transaction() as s:
            assert await iq.cursor(s, MAILBOX, "INBOX") == (7, 1)


async def test_the_same_message_twice_is_acted_on_once(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with inbox(database_url, tmp_path, smtp) as (engine, sender, processor):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        await send_due(engine, sender)
        message_id = smtp.wait_for(1)[0].parsed["Message-ID"]
        raw = reply("dana@globex.example", message_id, "Sounds good")
        first = await processor.process(MAILBOX, "INBOX", 7, 5, raw)
        again = await processor.process(MAILBOX, "INBOX", 7, 5, raw)
        assert not first.duplicate and again.duplicate
        async with engine.db.transaction() as s:
            assert len(await iq.recent_messages(s)) == 1


async def test_a_reply_from_a_colleague_stops_the_account_when_enabled(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    (tmp_path / "sequences").mkdir(parents=True, exist_ok=True)
    (tmp_path / "sequences" / "account.yaml").write_text(COMPANY_SEQUENCE)
    async with inbox(database_url, tmp_path, smtp) as (engine, sender, processor):
        await enroll_rows(engine, "account", people("dana@globex.example", "kai@globex.example"))
        await enroll_rows(engine, "three", people("lee@globex.example"))
        await send_due(engine, sender)
        dana_id = next(
            m.parsed["Message-ID"]
            for m in smtp.wait_for(3)
            if m.rcpt_tos == ("dana@globex.example",)
        )
        await processor.process(
            MAILBOX, "INBOX", 1, 1, reply("dana@globex.example", dana_id, "Interested")
        )
        kai = await enrollment(engine, "kai@globex.example")
        assert (kai.state, kai.stop_reason) == ("stopped", "account_replied")
        # Lee's sequence does not stop on a colleague's reply.
        assert (await enrollment(engine, "lee@globex.example")).state == "active"


async def test_an_out_of_office_pauses_until_the_return_date_and_resumes(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with inbox(database_url, tmp_path, smtp) as (engine, sender, processor):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        await send_due(engine, sender)
        message_id = smtp.wait_for(1)[0].parsed["Message-ID"]
        ooo = (
            "From: dana@globex.example\r\nTo: ana.reyes@northwind.example\r\n"
            "Subject: Out of Office: hello\r\nAuto-Submitted: auto-replied\r\n"
            f"In-Reply-To: {message_id}\r\nMessage-ID: <ooo-1@globex.example>\r\n\r\n"
            "I am out of the office and will be back on Monday, March 10, 2025.\r\n"
        ).encode()
        handled = await processor.process(MAILBOX, "INBOX", 1, 2, ooo)
        assert handled.classification.kind.value == "out_of_office"
        dana = await enrollment(engine, "dana@globex.example")
        assert dana.state == "paused" and dana.stop_reason is None
        # Back Monday 10 March: resumes one business day later, Tuesday 11 March.
        assert dana.paused_until == local(2025, 3, 11, 0, 0)
        move_to(engine, local(2025, 3, 11, 8, 0))
        assert await engine.resume_due() == 1
        assert (await enrollment(engine, "dana@globex.example")).state == "active"
        (_, follow) = await touches(engine, "dana@globex.example")
        assert follow.due_at >= local(2025, 3, 11, 9, 0)


async def test_an_unsubscribe_request_suppresses_and_stops_everything(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with inbox(database_url, tmp_path, smtp) as (engine, _sender, processor):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        await enroll_rows(engine, "post-sale-thank-you", people("dana@globex.example"))
        raw = (
            b"From: dana@globex.example\r\nTo: ana.reyes@northwind.example\r\n"
            b"Subject: unsubscribe\r\nMessage-ID: <u-1@globex.example>\r\n\r\n\r\n"
        )
        handled = await processor.process(MAILBOX, "INBOX", 1, 3, raw)
        assert handled.classification.kind.value == "unsubscribe"
        for each in await enrollments(engine, "dana@globex.example"):
            assert (each.state, each.stop_reason) == ("stopped", "unsubscribed")
        report = await enroll_rows(engine, "three", people("dana@globex.example"), expect_all=False)
        assert report.skipped[0].reason.startswith("suppressed")


def bounce(recipient: str, original_id: str, status: str, action: str = "failed") -> bytes:
    boundary = "BOUNDARY"
    return (
        "From: MAILER-DAEMON@mx.globex.example\r\nTo: ana.reyes@northwind.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <b-"
        f"{recipient}-{status}@mx>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"'
        f"\r\n\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.globex.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {original_id}\r\nTo: {recipient}\r\n\r\n--{boundary}--\r\n"
    ).encode()


async def test_bounces_permanent_at_once_transient_after_repeats(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with inbox(database_url, tmp_path, smtp) as (engine, sender, processor):
        await enroll_rows(engine, "three", people("dana@globex.example", "kai@initech.example"))
        await send_due(engine, sender)
        ids = {m.rcpt_tos[0]: m.parsed["Message-ID"] for m in smtp.wait_for(2)}
        hard = await processor.process(
            MAILBOX,
            "INBOX",
            1,
            10,
            bounce("dana@globex.example", ids["dana@globex.example"], "5.1.1"),
        )
        assert hard.classification.permanent is True
        dana = await enrollment(engine, "dana@globex.example")
        assert (dana.state, dana.stop_reason) == ("stopped", "bounced")
        for uid in (11, 12):
            soft = await processor.process(
                MAILBOX,
                "INBOX",
                1,
                uid,
                bounce("kai@initech.example", ids["kai@initech.example"], "4.2.2", "delayed"),
            )
            assert soft.action == "recorded: temporary bounce"
        assert (await enrollment(engine, "kai@initech.example")).state == "active"
        await processor.process(
            MAILBOX,
            "INBOX",
            1,
            13,
            bounce("kai@initech.example", ids["kai@initech.example"], "4.2.2", "delayed"),
        )
        kai = await enrollment(engine, "kai@initech.example")
        assert (kai.state, kai.stop_reason) == ("stopped", "bounced")


async def test_a_reply_matched_by_sender_address_alone(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with inbox(database_url, tmp_path, smtp) as (engine, _sender, processor):
        await enroll_rows(engine, "three", [ProspectRow(2, "dana@globex.example", {})])
        raw = (
            b"From: Dana <DANA@globex.example>\r\nTo: ana.reyes@northwind.example\r\n"
            b"Subject: question\r\nMessage-ID: <q-1@globex.example>\r\n\r\nCan you call me?\r\n"
        )
        handled = await processor.process(MAILBOX, "INBOX", 1, 20, raw)
        assert handled.classification.kind.value == "reply"
        assert (await enrollment(engine, "dana@globex.example")).stop_reason == "replied"


async def test_a_colleague_never_enrolled_replying_stops_the_account_when_enabled(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    (tmp_path / "sequences").mkdir(parents=True, exist_ok=True)
    (tmp_path / "sequences" / "account.yaml").write_text(COMPANY_SEQUENCE)
    async with inbox(database_url, tmp_path, smtp) as (engine, _sender, processor):
        await enroll_rows(engine, "account", people("dana@globex.example"))
        await enroll_rows(engine, "three", people("lee@globex.example"))
        raw = (
            b"From: Sam Boss <sam@globex.example>\r\nTo: ana.reyes@northwind.example\r\n"
            b"Subject: Your note to Dana\r\nMessage-ID: <c-1@globex.example>\r\n\r\n"
            b"Dana forwarded your email. Let's talk next week.\r\n"
        )
        handled = await processor.process(MAILBOX, "INBOX", 1, 30, raw)
        assert "someone at globex.example replied" in handled.action
        dana = await enrollment(engine, "dana@globex.example")
        assert (dana.state, dana.stop_reason) == ("stopped", "account_replied")
        assert (await enrollment(engine, "lee@globex.example")).state == "active"
        # A free-mail domain is never "the same company".
        await enroll_rows(engine, "account", people("pat@gmail.com"))
        free = (
            b"From: someone@gmail.com\r\nTo: ana.reyes@northwind.example\r\n"
            b"Subject: hi\r\nMessage-ID: <c-2@gmail.com>\r\n\r\nHello\r\n"
        )
        await processor.process(MAILBOX, "INBOX", 1, 31, free)
        assert (await enrollment(engine, "pat@gmail.com")).state == "active"


async def test_a_reply_from_a_known_alias_stops_the_sequence(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with inbox(database_url, tmp_path, smtp) as (engine, _sender, processor):
        dana = ProspectRow(
            2, "dana@globex.example", {"aliases": "Dana.Kim@gmail.com; dk@old.example"}
        )
        await enroll_rows(engine, "three", [dana])
        raw = (
            b"From: Dana Kim <dana.kim@gmail.com>\r\nTo: ana.reyes@northwind.example\r\n"
            b"Subject: from my phone\r\nMessage-ID: <a-1@gmail.com>\r\n\r\nCall me tomorrow.\r\n"
        )
        handled = await processor.process(MAILBOX, "INBOX", 1, 40, raw)
        assert handled.enrollments
        found = await enrollment(engine, "dana@globex.example")
        assert (found.state, found.stop_reason) == ("stopped", "replied")
