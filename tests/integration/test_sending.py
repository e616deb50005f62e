"""Sending for real: the sender and dispatcher against real SMTP servers, on both databases."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from helpers import (
    OWNER,
    enroll_rows,
    enrollment,
    local,
    make_project,
    move_to,
    people,
    running_engine,
    touches,
)
from servers.dovecot import DovecotServer
from servers.smtp import FaultySMTPServer, RecordingSMTPServer

from sequencer.catalog import Project
from sequencer.core.errors import InvalidState, NotFound
from sequencer.core.mailbox_config import Security
from sequencer.core.prospects import ProspectRow
from sequencer.core.states import TouchState
from sequencer.core.unsubscribe import read_token
from sequencer.runtime.dispatcher import Dispatcher
from sequencer.runtime.engine import Engine
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Outcome, Sender
from sequencer.store import mailboxes as mq
from sequencer.store import touches as tq

SECRET = b"test-secret-0123456789abcdef"
THREE_EMAILS = """\
description: Three emails, the third in a new thread.
schedule:
  timezone: America/New_York
  hours: "09:00-17:00"
limits:
  min_gap: 1 day
  max_per_week: 3
steps:
  - id: intro
    email: cold-intro
  - id: follow
    delay: 2 days
    email: value-benchmark-report
  - id: fresh
    delay: 2 days
    email: cold-new-angle
    thread: new
"""


def project_with_smtp(root: Path, port: int, **mailbox: object) -> Project:
    project = make_project(root, {"three": THREE_EMAILS})
    config = yaml.safe_load((root / "sequencer.yaml").read_text())
    for box in config["mailboxes"]:
        box["smtp"] = {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 2}
        box.update(mailbox)
    (root / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return project


@asynccontextmanager
async def sending(
    url: str, root: Path, port: int, **mailbox: object
) -> AsyncIterator[tuple[Engine, Sender]]:
    project = project_with_smtp(root, port, **mailbox)
    async with running_engine(url, project) as engine:
        assert engine.catalog.config is not None
        boxes = Mailboxes(engine.catalog.config)
        try:
            yield engine, Sender(engine, boxes, secret=SECRET)
        finally:
            await boxes.close()


async def send_due(engine: Engine, sender: Sender) -> list[Outcome]:
    """Claim everything due now and send it, as the dispatcher would."""
    async with engine.db.transaction() as s:
        ids = await tq.claim_due(s, engine.now(), 100)
    return [await sender.send_touch(i) for i in ids]


async def run_to_end(engine: Engine, sender: Sender, days: int = 14) -> None:
    """Move the clock hour by hour and send whatever is due."""
    start = engine.now()
    while engine.now() < start + timedelta(days=days):
        await send_due(engine, sender)
        move_to(engine, engine.now() + timedelta(hours=1))


async def test_a_sequence_arrives_threaded_with_unsubscribe_headers(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with sending(database_url, tmp_path, smtp.port) as (engine, sender):
        await enroll_rows(engine, "three", people("dana@globex.example", first_name="Dana"))
        await run_to_end(engine, sender)
    messages = smtp.wait_for(3)
    assert len(messages) == 3
    first, second, third = (m.parsed for m in messages)
    for received in messages:
        assert received.mail_from == OWNER
        assert received.rcpt_tos == ("dana@globex.example",)
        assert "Auto-Submitted" not in received.parsed
    assert first["From"] == "Ana Reyes <ana.reyes@northwind.example>"
    assert "Dana" in first.get_content() or "Dana" in str(first.get_body(("plain",)))
    # The follow-up replies in the first email's thread; the third starts a new one.
    assert second["Subject"] == f"Re: {first['Subject']}"
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"] == first["Message-ID"]
    assert not third["Subject"].startswith("Re:")
    assert third["In-Reply-To"] is None
    index_1 = base64.b64decode(first["Thread-Index"])
    index_2 = base64.b64decode(second["Thread-Index"])
    assert len(index_1) == 22 and len(index_2) == 27 and index_1 == index_2[:22]
    # One-click unsubscribe (RFC 8058) with a link that names the recipient, signed.
    assert second["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = second["List-Unsubscribe"].split(",")[0].strip(" <>")
    assert link.startswith("https://sequencer.northwind.example/u/")
    assert read_token(SECRET, link.rsplit("/", 1)[1]) == "dana@globex.example"
    assert "mailto:ana.reyes@northwind.example?subject=unsubscribe" in second["List-Unsubscribe"]
    # Deterministic, distinct Message-IDs on the mailbox's domain.
    ids = [m["Message-ID"] for m in (first, second, third)]
    assert len(set(ids)) == 3 and all(i.endswith("@northwind.example>") for i in ids)


async def test_a_second_delivery_of_the_same_job_sends_nothing(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with sending(database_url, tmp_path, smtp.port) as (engine, sender):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        async with engine.db.transaction() as s:
            (touch_id,) = await tq.claim_due(s, engine.now(), 10)
        assert await sender.send_touch(touch_id) is Outcome.SENT
        assert await sender.send_touch(touch_id) is Outcome.SKIPPED
        assert await sender.send_touch(touch_id) is Outcome.SKIPPED
    assert len(smtp.wait_for(1)) == 1


async def test_nothing_goes_out_after_a_stop(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with sending(database_url, tmp_path, smtp.port) as (engine, sender):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        async with engine.db.transaction() as s:
            (touch_id,) = await tq.claim_due(s, engine.now(), 10)
        # The reply is recorded while the touch is queued for a worker.
        await engine.stop("dana@globex.example")
        assert await sender.send_touch(touch_id) is Outcome.SKIPPED
        (touch,) = await touches(engine, "dana@globex.example")
        assert touch.state == TouchState.CANCELLED.value
    assert smtp.messages == []


async def test_a_hard_bounce_stops_and_suppresses(database_url: str, tmp_path: Path) -> None:
    with FaultySMTPServer() as server:
        async with sending(database_url, tmp_path, server.port) as (engine, sender):
            await enroll_rows(engine, "three", people("reject-rcpt-dana@globex.example"))
            assert await send_due(engine, sender) == [Outcome.BOUNCED]
            dana = await enrollment(engine, "reject-rcpt-dana@globex.example")
            assert (dana.state, dana.stop_reason) == ("stopped", "bounced")
            (touch,) = await touches(engine, "reject-rcpt-dana@globex.example")
            assert touch.state == "failed" and "550" in (touch.last_error or "")
            report = await enroll_rows(
                engine,
                "post-sale-thank-you",
                people("reject-rcpt-dana@globex.example"),
                expect_all=False,
            )
            assert report.skipped[0].reason.startswith("suppressed")


async def test_temporary_failures_are_retried_then_failed(
    database_url: str, tmp_path: Path
) -> None:
    with FaultySMTPServer() as server:
        async with sending(database_url, tmp_path, server.port) as (engine, sender):
            await enroll_rows(engine, "three", people("tempfail-rcpt-dana@globex.example"))
            outcomes: list[Outcome] = []
            for _ in range(40):
                outcomes += await send_due(engine, sender)
                move_to(engine, engine.now() + timedelta(hours=2))
                if Outcome.FAILED in outcomes:
                    break
            # Retries that land outside the window wait for it (LATER); the tries themselves:
            tries = [o for o in outcomes if o is not Outcome.LATER]
            assert tries == [Outcome.DEFERRED] * 4 + [Outcome.FAILED]
            first, *rest = await touches(engine, "tempfail-rcpt-dana@globex.example")
            assert first.state == "failed" and "451" in (first.last_error or "")
            # The follow-up is planned: one broken email never ends the follow-up.
            assert [t.step_id for t in rest] == ["follow"]


async def test_a_lost_connection_after_data_is_unknown_and_held(
    database_url: str, tmp_path: Path
) -> None:
    with FaultySMTPServer() as server:
        async with sending(database_url, tmp_path, server.port) as (engine, sender):
            await enroll_rows(engine, "three", people("drop-after-data-dana@globex.example"))
            assert await send_due(engine, sender) == [Outcome.UNKNOWN]
            move_to(engine, engine.now() + timedelta(days=3))
            assert await send_due(engine, sender) == []  # held: never resent by itself
            (touch,) = await touches(engine, "drop-after-data-dana@globex.example")
            assert touch.state == "unknown"
        assert len(server.messages) == 1  # the server did get it; the client could not know


async def test_a_person_settles_an_unknown_email_as_arrived_and_the_sequence_moves_on(
    database_url: str, tmp_path: Path
) -> None:
    with FaultySMTPServer() as server:
        async with sending(database_url, tmp_path, server.port) as (engine, sender):
            await enroll_rows(engine, "three", people("drop-after-data-dana@globex.example"))
            assert await send_due(engine, sender) == [Outcome.UNKNOWN]
            (held,) = await touches(engine, "drop-after-data-dana@globex.example")
            planned = await engine.settle(held.id, arrived=True, note="in the Sent folder")
            assert planned is not None and planned.step_id == "follow"
            first, follow = await touches(engine, "drop-after-data-dana@globex.example")
            assert (first.state, follow.state) == ("sent", "scheduled")
            with pytest.raises(InvalidState, match="not unknown"):
                await engine.settle(held.id, arrived=False)
    assert len(server.messages) == 1


async def test_a_person_settles_an_unknown_email_as_never_sent_and_it_goes_again(
    database_url: str, tmp_path: Path
) -> None:
    with FaultySMTPServer() as server:
        async with sending(database_url, tmp_path, server.port) as (engine, sender):
            await enroll_rows(engine, "three", people("drop-after-data-dana@globex.example"))
            assert await send_due(engine, sender) == [Outcome.UNKNOWN]
            (held,) = await touches(engine, "drop-after-data-dana@globex.example")
            await engine.settle(held.id, arrived=False)
            move_to(engine, engine.now() + timedelta(minutes=2))  # the mailbox's spacing
            assert await send_due(engine, sender) == [Outcome.UNKNOWN]  # the server drops again
            with pytest.raises(NotFound):
                await engine.settle(held.id + 1000, arrived=True)
    ids = {m.parsed["Message-ID"] for m in server.messages}
    assert len(server.messages) == 2 and len(ids) == 1


async def test_resend_policy_sends_again_with_the_same_message_id(
    database_url: str, tmp_path: Path
) -> None:
    with FaultySMTPServer() as server:
        async with sending(database_url, tmp_path, server.port, unknown_outcome="resend") as (
            engine,
            sender,
        ):
            await enroll_rows(engine, "three", people("drop-after-data-dana@globex.example"))
            assert await send_due(engine, sender) == [Outcome.UNKNOWN]
            move_to(engine, engine.now() + timedelta(minutes=2))  # the mailbox's spacing
            assert await send_due(engine, sender) == [Outcome.UNKNOWN]
        ids = {m.parsed["Message-ID"] for m in server.messages}
        assert len(server.messages) == 2 and len(ids) == 1


async def test_a_mailbox_that_cannot_connect_makes_touches_wait(
    database_url: str, tmp_path: Path
) -> None:
    with RecordingSMTPServer() as server:
        port = server.port
    # Nothing listens on the port any more.
    async with sending(database_url, tmp_path, port) as (engine, sender):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        assert await send_due(engine, sender) == [Outcome.MAILBOX_DOWN]
        (touch,) = await touches(engine, "dana@globex.example")
        assert touch.state == "scheduled" and touch.attempts == 0
        async with engine.db.transaction() as s:
            state = await mq.mailbox_state(s, OWNER, engine.now())
        assert state.healthy is False and "127.0.0.1" in (state.status_note or "")
        # Back up later: the same touch goes out and the mailbox is healthy again.
        with RecordingSMTPServer(port=port) as again:
            move_to(engine, engine.now() + timedelta(minutes=10))
            assert await send_due(engine, sender) == [Outcome.SENT]
            assert len(again.wait_for(1)) == 1
        async with engine.db.transaction() as s:
            assert (await mq.mailbox_state(s, OWNER, engine.now())).healthy is True


async def test_daily_cap_and_spacing_move_sends_later(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with sending(
        database_url, tmp_path, smtp.port, daily_cap=2, min_spacing="10 minutes"
    ) as (engine, sender):
        emails = [f"p{i}@company{i}.example" for i in range(3)]
        await enroll_rows(engine, "three", people(*emails))
        outcomes = await send_due(engine, sender)
        # The first goes out; the others wait for the spacing.
        assert outcomes.count(Outcome.SENT) == 1 and outcomes.count(Outcome.LATER) == 2
        move_to(engine, engine.now() + timedelta(minutes=10))
        assert (await send_due(engine, sender)).count(Outcome.SENT) == 1
        move_to(engine, engine.now() + timedelta(minutes=10))
        assert await send_due(engine, sender) == []  # cap reached: moved out by a day
        pending = [t for e in emails for t in await touches(engine, e) if t.state == "scheduled"]
        (waiting,) = [t for t in pending if t.step_id == "intro"]
        assert waiting.due_at >= engine.now() + timedelta(hours=23)
    assert len(smtp.messages) == 2


async def test_outside_the_window_a_due_touch_waits_for_the_window(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with sending(database_url, tmp_path, smtp.port) as (engine, sender):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        # The worker was down all evening; it comes back at 22:00.
        move_to(engine, local(2025, 3, 4, 22, 0))
        assert await send_due(engine, sender) == [Outcome.LATER]
        (touch,) = await touches(engine, "dana@globex.example")
        assert touch.due_at == local(2025, 3, 5, 9, 0)


async def test_a_process_that_died_while_sending_leaves_unknown_not_a_resend(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with sending(database_url, tmp_path, smtp.port) as (engine, _sender):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        async with engine.db.transaction() as s:
            (touch_id,) = await tq.claim_due(s, engine.now(), 10)
            await tq.mark_sending(s, touch_id, "<crash@northwind.example>", None, engine.now())
        sent: list[int] = []

        async def hand_out(touch_id: int) -> None:
            sent.append(touch_id)

        dispatcher = Dispatcher(engine, hand_out, stale_after=timedelta(minutes=5))
        move_to(engine, engine.now() + timedelta(minutes=10))
        await dispatcher.housekeeping()
        (touch,) = await touches(engine, "dana@globex.example")
        assert touch.state == "unknown"
        assert "stopped during the SMTP conversation" in (touch.last_error or "")
        await dispatcher.tick()
        assert sent == []
    assert smtp.messages == []


async def test_header_injection_from_prospect_data_is_harmless(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with sending(database_url, tmp_path, smtp.port) as (engine, sender):
        evil = people("dana@globex.example", first_name="Dana\r\nBcc: victim@evil.example")
        await enroll_rows(engine, "three", evil)
        assert await send_due(engine, sender) == [Outcome.SENT]
    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == ("dana@globex.example",)
    assert "Bcc" not in received.parsed
    headers = received.raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in headers
    assert received.parsed["To"] == '"Dana Bcc: victim@evil.example" <dana@globex.example>'


async def test_a_mailbox_with_too_many_bounces_pauses_itself(
    database_url: str, tmp_path: Path
) -> None:
    from sequencer.runtime import reports

    with FaultySMTPServer() as server:
        async with sending(database_url, tmp_path, server.port, min_spacing="0 minutes") as (
            engine,
            sender,
        ):
            good = [f"ok-{i}@company{i}.example" for i in range(21)]
            bad = [f"reject-rcpt-{i}@other{i}.example" for i in range(3)]
            await enroll_rows(engine, "three", people(*good))
            assert (await send_due(engine, sender)).count(Outcome.SENT) == 21
            await enroll_rows(engine, "three", people(*bad))
            # 1 bounce in 21 sends is under 5%; the second one trips the threshold.
            assert await send_due(engine, sender) == [
                Outcome.BOUNCED,
                Outcome.BOUNCED,
                Outcome.LATER,
            ]
            status = await reports.status(engine)
            (ana,) = [m for m in status.mailboxes if m["address"] == OWNER]
            assert ana["paused_until"] is not None
            assert "2 bounces in 21 emails" in ana["note"]


def imap_block(server: DovecotServer, user: str, **extra: object) -> dict[str, object]:
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "security": "none",
        "username": user,
        "password_env": "TEST_IMAP_PASSWORD",
        "sent_folder": "Sent",
        "timeout": 5,
        **extra,
    }


async def test_check_sent_folder_settles_unknown_touches(
    database_url: str,
    tmp_path: Path,
    dovecot_server: DovecotServer,
    imap_user: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user, password = imap_user
    monkeypatch.setenv("TEST_IMAP_PASSWORD", password)
    dovecot_server.create_folder(user, "Sent")
    with FaultySMTPServer() as server:
        async with sending(
            database_url,
            tmp_path,
            server.port,
            unknown_outcome="check_sent_folder",
            min_spacing="0 minutes",
            imap=imap_block(dovecot_server, user),
        ) as (engine, sender):
            await enroll_rows(
                engine,
                "three",
                people("drop-after-data-a@one.example", "drop-after-data-b@two.example"),
            )
            assert await send_due(engine, sender) == [Outcome.UNKNOWN, Outcome.UNKNOWN]
            # Too early: the provider may not have filed its copy yet.
            assert await sender.recheck_unknown() == 0
            # The provider filed a copy of the first one only.
            first, second = server.messages
            dovecot_server.deliver(user, first.raw, folder="Sent")
            move_to(engine, engine.now() + timedelta(minutes=3))
            assert await sender.recheck_unknown() == 2
            (a_intro, *a_rest) = await touches(engine, "drop-after-data-a@one.example")
            assert a_intro.state == "sent" and [t.step_id for t in a_rest] == ["follow"]
            (b_intro,) = await touches(engine, "drop-after-data-b@two.example")
            assert b_intro.state == "scheduled"  # never arrived: it goes out again
            assert second.parsed["Message-ID"] != first.parsed["Message-ID"]


async def test_save_to_sent_keeps_a_copy_in_the_sent_folder(
    database_url: str,
    tmp_path: Path,
    smtp: RecordingSMTPServer,
    dovecot_server: DovecotServer,
    imap_user: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sequencer.mail.imap import ImapSettings, find_message_id

    user, password = imap_user
    monkeypatch.setenv("TEST_IMAP_PASSWORD", password)
    dovecot_server.create_folder(user, "Sent")
    async with sending(
        database_url, tmp_path, smtp.port, imap=imap_block(dovecot_server, user, save_to_sent=True)
    ) as (engine, sender):
        await enroll_rows(engine, "three", people("dana@globex.example"))
        assert await send_due(engine, sender) == [Outcome.SENT]
    (received,) = smtp.wait_for(1)
    settings = ImapSettings(
        host="127.0.0.1",
        port=dovecot_server.port,
        security=Security.NONE,
        username=user,
        password=password,
    )
    assert await find_message_id(settings, "Sent", received.parsed["Message-ID"], name=user)


async def test_the_company_daily_limit_spreads_colleagues_over_days(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with sending(database_url, tmp_path, smtp.port, min_spacing="0 minutes") as (
        engine,
        sender,
    ):
        colleagues = [f"p{i}@globex.example" for i in range(5)]
        rows = [
            ProspectRow(i + 2, email, {"domain": "globex.example"})
            for i, email in enumerate(colleagues)
        ]
        await enroll_rows(engine, "three", rows)
        outcomes = await send_due(engine, sender)
        # The default limit is 3 emails per company in 24 hours; the others wait a day.
        assert outcomes.count(Outcome.SENT) == 3 and outcomes.count(Outcome.LATER) == 2
        move_to(engine, engine.now() + timedelta(days=1, hours=1))
        assert (await send_due(engine, sender)).count(Outcome.SENT) == 2
