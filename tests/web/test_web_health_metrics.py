"""/healthz says whether the database can be used, /metrics is valid Prometheus text whose
figures move when an email goes out, a reply stops a sequence, and someone unsubscribes."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

from servers.smtp import RecordingSMTPServer, free_port
from web_support import (
    OWNER,
    SECRET,
    enrollments_of,
    make_project,
    metric_values,
    parse_prometheus,
    person,
    touches_of,
    web_app,
)

from sequencer.core.unsubscribe import make_token
from sequencer.runtime.enrollment import enroll
from sequencer.runtime.inbox import InboxProcessor
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Sender
from sequencer.store import touches as tq
from sequencer.store.database import Database, head_revision

DANA = "dana.kim@globex.example"


async def test_healthz_on_a_current_database(database_url: str, tmp_path: Path) -> None:
    async with web_app(database_url, make_project(tmp_path)) as web:
        answer = await web.client.get("/healthz")
        assert answer.status_code == 200
        assert answer.json() == {"status": "ok", "schema": head_revision()}


async def test_an_unmigrated_database_is_reported_until_it_is_upgraded(
    empty_database_url: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path / "project")
    async with web_app(empty_database_url, project, migrate_check=False) as web:
        health = await web.client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["hint"] == "run `sequencer db upgrade`"
        assert str(tmp_path) not in health.text and "127.0.0.1" not in health.text

        api = await web.api.get("/api/v1/tasks")
        assert api.status_code == 503
        assert api.json() == {
            "error": "the database is not ready",
            "hint": "run `sequencer db upgrade`",
        }
        link = await web.client.post(
            f"/u/{make_token(SECRET, DANA)}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert link.status_code == 503
        assert "try again in a few minutes" in link.text
        metrics = parse_prometheus((await web.client.get("/metrics")).text)
        assert metrics["sequencer_up"].value() == 0

        # Upgrading while the server runs is enough: no restart needed.
        database = Database(empty_database_url)
        try:
            await database.upgrade()
        finally:
            await database.close()
        assert (await web.client.get("/healthz")).status_code == 200
        assert (await web.api.get("/api/v1/tasks")).json() == {"tasks": []}
        assert metric_values((await web.client.get("/metrics")).text)["sequencer_up"] == 1


async def test_an_unreachable_database_is_reported(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    async with web_app(url, make_project(tmp_path), migrate_check=False) as web:
        health = await web.client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["reason"] == "the database cannot be reached"
        api = await web.api.get(f"/api/v1/prospects/{DANA}/timeline")
        assert api.status_code == 503
        assert api.json()["error"] == "the database cannot be reached"


def reply_to(message_id: str, received: str) -> bytes:
    return (
        f"Received: from mail.globex.example by mx.northwind.example; {received}\r\n"
        f"From: Dana Kim <{DANA}>\r\n"
        f"To: {OWNER}\r\n"
        "Subject: Re: Forecasting volume at Globex\r\n"
        f"Message-ID: <reply-1@globex.example>\r\n"
        f"In-Reply-To: {message_id}\r\n"
        f"References: {message_id}\r\n"
        f"Date: {received}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Thanks, yes: can we talk on Thursday?\r\n"
    ).encode()


async def test_metrics_are_prometheus_text_and_move_with_sends_replies_and_unsubscribes(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    async with web_app(database_url, make_project(tmp_path, smtp_port=smtp.port)) as web:
        # From two mailboxes, so one mailbox's spacing between sends holds nothing back.
        await enroll(web.engine, "email-then-call", [person(DANA)], owner=OWNER)
        await enroll(
            web.engine,
            "email-then-call",
            [person("lee@initech.example")],
            owner=OWNER,
            mailbox="marcus.oyelaran@northwind.example",
        )
        answer = await web.client.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        before = parse_prometheus(answer.text)
        assert before["sequencer_emails_sent_total"].kind == "counter"
        assert before["sequencer_emails_sent_total"].value() == 0
        assert before["sequencer_queue_depth"].value(stage="due") == 2
        assert before["sequencer_enrollments"].value(state="active") == 2
        assert before["sequencer_reply_to_stop_seconds"].kind == "histogram"
        assert before["sequencer_reply_to_stop_seconds"].value("_count") == 0

        # Both first emails go out.
        assert web.engine.catalog.config is not None
        boxes = Mailboxes(web.engine.catalog.config)
        try:
            sender = Sender(web.engine, boxes, secret=SECRET)
            async with web.engine.db.transaction() as s:
                ids = await tq.claim_due(s, web.engine.now(), 10)
            for touch_id in ids:
                await sender.send_touch(touch_id)
        finally:
            await boxes.close()
        assert len(smtp.wait_for(2)) == 2
        sent = parse_prometheus((await web.client.get("/metrics")).text)
        assert sent["sequencer_emails_sent_total"].value() == 2
        assert sent["sequencer_email_touches"].value(state="sent") == 2
        assert sent["sequencer_queue_depth"].value(stage="due") == 0

        # Dana answers; her message reached the mailbox 42 seconds before it was processed.
        web.clock.advance(timedelta(hours=2))
        arrived = web.engine.now() - timedelta(seconds=42)
        (intro, *_) = await touches_of(web.engine, DANA)
        assert intro.message_id
        processor = InboxProcessor(web.engine, secret=SECRET)
        handled = await processor.process(
            OWNER, "INBOX", 7, 1, reply_to(intro.message_id, format_datetime(arrived))
        )
        assert handled.action.startswith("stopped")
        assert [e.stop_reason for e in await enrollments_of(web.engine, DANA)] == ["replied"]

        replied = parse_prometheus((await web.client.get("/metrics")).text)
        assert replied["sequencer_replies_total"].value() == 1
        assert replied["sequencer_inbound_messages"].value(kind="reply") == 1
        wait = replied["sequencer_reply_to_stop_seconds"]
        assert wait.value("_count") == 1
        assert abs(wait.value("_sum") - 42) < 1
        assert wait.value("_bucket", le="30.0") == 0
        assert wait.value("_bucket", le="60.0") == 1
        assert wait.value("_bucket", le="+Inf") == 1
        assert replied["sequencer_enrollments"].value(state="stopped") == 1

        # Lee clicks the unsubscribe link.
        await web.client.post(
            f"/u/{make_token(SECRET, 'lee@initech.example')}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        after = metric_values((await web.client.get("/metrics")).text)
        assert after["sequencer_unsubscribes_total"] == 1
        assert after["sequencer_replies_total"] == 1
        assert after["sequencer_emails_sent_total"] == 2
