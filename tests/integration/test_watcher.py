"""The inbox watcher against a real Dovecot and a real SMTP server, on both databases: replies
stop sequences within seconds, nothing is missed or acted on twice across restarts, server
crashes and UIDVALIDITY changes, and nothing in the mailbox is ever marked read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    NEW_YORK,
    OWNER,
    enroll_rows,
    enrollment,
    events,
    local,
    move_to,
    people,
    running_engine,
    touches,
)
from servers.dovecot import DovecotServer
from servers.smtp import ReceivedMessage, RecordingSMTPServer
from sqlalchemy import select
from test_sending import SECRET, project_with_smtp, send_due

from sequencer.core.errors import InvalidState
from sequencer.core.mailbox_config import Security
from sequencer.core.states import TouchState
from sequencer.mail.imap import ImapSettings, session
from sequencer.runtime.engine import Engine
from sequencer.runtime.inbox import Handled, InboxProcessor
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Outcome, Sender
from sequencer.runtime.watcher import MailboxWatcher, start_watchers
from sequencer.store import inbound as iq
from sequencer.store import mailboxes as mq
from sequencer.store import touches as tq
from sequencer.store.models import InboundMessage

DANA = "dana@globex.example"
PASSWORD_ENV = "TEST_WATCHER_IMAP_PASSWORD"
# Short everything: the defaults (25-minute IDLE, 1-60 s backoff) would make tests crawl.
FAST = {"idle_timeout": 5.0, "poll_interval": 0.2, "backoff": 0.1, "max_backoff": 0.5}


@dataclass
class Inbox:
    """A running engine whose first mailbox (Ana's) is watched over IMAP."""

    engine: Engine
    sender: Sender
    processor: InboxProcessor
    dovecot: DovecotServer
    user: str
    smtp: RecordingSMTPServer

    def watcher(self, **options: Any) -> MailboxWatcher:
        config = self.engine.catalog.config
        assert config is not None
        box = config.mailbox(OWNER)
        assert box is not None
        return MailboxWatcher(self.engine, self.processor, box, **{**FAST, **options})

    async def deliver(self, message: bytes, folder: str = "INBOX") -> None:
        """Deliver as the mail server would, without blocking the watcher meanwhile."""
        await asyncio.to_thread(self.dovecot.deliver, self.user, message, folder)

    def assert_nothing_seen(self, folder: str = "INBOX") -> None:
        flags = self.dovecot.flags(self.user, folder)
        assert flags, "the folder should hold messages"
        assert all("\\Seen" not in f for f in flags.values()), flags


@asynccontextmanager
async def watched_inbox(
    database_url: str,
    tmp_path: Path,
    smtp: RecordingSMTPServer,
    dovecot: DovecotServer,
    user: str,
) -> AsyncIterator[Inbox]:
    """An engine whose first mailbox sends to ``smtp`` and reads ``user``'s mail on
    ``dovecot`` (its password in PASSWORD_ENV), with a sender and an inbox processor."""
    project = project_with_smtp(tmp_path, smtp.port, min_spacing="0 minutes")
    config = yaml.safe_load(project.config_path.read_text())
    config["mailboxes"][0]["imap"] = {
        "host": "127.0.0.1",
        "port": dovecot.port,
        "security": "none",
        "username": user,
        "password_env": PASSWORD_ENV,
        "timeout": 3,
    }
    project.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    async with running_engine(database_url, project) as engine:
        assert engine.catalog.config is not None
        boxes = Mailboxes(engine.catalog.config)
        try:
            yield Inbox(
                engine,
                Sender(engine, boxes, secret=SECRET),
                InboxProcessor(engine, secret=SECRET),
                dovecot,
                user,
                smtp,
            )
        finally:
            await boxes.close()


@pytest.fixture
async def inbox(
    database_url: str,
    tmp_path: Path,
    smtp: RecordingSMTPServer,
    dovecot_server: DovecotServer,
    imap_user: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Inbox]:
    user, password = imap_user
    monkeypatch.setenv(PASSWORD_ENV, password)
    async with watched_inbox(database_url, tmp_path, smtp, dovecot_server, user) as inbox:
        yield inbox


@asynccontextmanager
async def running(watcher: MailboxWatcher) -> AsyncIterator[asyncio.Task[None]]:
    """The watcher running in the background, stopped (and checked to stop) afterwards."""
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def wait_until(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> float:
    """Poll ``check`` (sync or async) until it is true; returns how long it took."""
    started = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        await asyncio.sleep(0.02)


async def idling(watcher: MailboxWatcher, folder: str = "INBOX") -> None:
    await wait_until(lambda: watcher.folder_states.get(folder) == "idle", what="idle")


def reply(
    to: ReceivedMessage | None,
    text: str = "Thanks, Thursday at 10 works for me.",
    *,
    sender: str = DANA,
    subject: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A prospect's answer; threaded under our message ``to`` when given (In-Reply-To and
    References carry our Message-ID), else a fresh email from the same address."""
    message = EmailMessage()
    message["From"] = f"Prospect <{sender}>"
    message["To"] = OWNER
    message["Subject"] = subject or (f"Re: {to.parsed['Subject']}" if to else "A question")
    message["Date"] = format_datetime(local(2025, 3, 4, 11, 0))
    message["Message-ID"] = make_msgid(domain=sender.split("@")[1])
    if to is not None:
        message["In-Reply-To"] = to.parsed["Message-ID"]
        message["References"] = to.parsed["Message-ID"]
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(f"{text}\n\nOn Tuesday Ana wrote:\n> Hi, quick question\n")
    return message.as_bytes()


async def sent_intros(box: Inbox, *emails: str) -> dict[str, ReceivedMessage]:
    """Enroll the prospects, send their first email and return what each received."""
    await enroll_rows(box.engine, "three", people(*emails))
    outcomes = await send_due(box.engine, box.sender)
    assert outcomes == [Outcome.SENT] * len(emails)
    received = box.smtp.wait_for(len(emails))
    return {m.rcpt_tos[0]: m for m in received}


async def state_of(engine: Engine, email: str) -> tuple[str, str | None]:
    found = await enrollment(engine, email)
    return found.state, found.stop_reason


async def recorded(engine: Engine) -> list[InboundMessage]:
    async with engine.db.transaction() as s:
        return list((await s.execute(select(InboundMessage).order_by(InboundMessage.id))).scalars())


async def replied_events(engine: Engine, email: str) -> int:
    return sum(1 for e in await events(engine, email) if e.kind == "replied")


# --- the IMAP session underneath ------------------------------------------------------------


async def test_the_session_fetches_only_new_messages_and_idles_until_mail_arrives(
    dovecot_server: DovecotServer, imap_user: tuple[str, str]
) -> None:
    user, password = imap_user
    for number in range(3):
        dovecot_server.deliver(user, reply(None, f"message {number}", subject=f"n{number}"))
    port = dovecot_server.port
    assert port is not None
    settings = ImapSettings("127.0.0.1", port, Security.NONE, user, password, timeout=3)
    async with session(settings, name=OWNER) as imap:
        assert imap.has_idle
        await imap.examine("INBOX")
        assert [uid for uid, _ in await imap.uid_fetch_since(0, 2)] == [1, 2]
        ((uid, raw),) = await imap.uid_fetch_since(2, 10)
        assert uid == 3 and b"message 2" in raw
        # `4:*` would name the last message (RFC 3501): it must not come back as new.
        assert await imap.uid_fetch_since(3, 10) == []
        assert await imap.uid_fetch_since(40, 10) == []
        ((_, head),) = await imap.uid_fetch_since(2, 10, max_bytes=40)
        assert len(head) == 40
        started = time.monotonic()
        assert await imap.idle(0.3) is False
        assert 0.3 <= time.monotonic() - started < 2
        wake = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, wake.set)
        assert await imap.idle(30, wake=wake) is False  # woken: ends at once, DONE said
        arrival = asyncio.create_task(asyncio.to_thread(dovecot_server.deliver, user, reply(None)))
        started = time.monotonic()
        assert await imap.idle(10) is True
        await arrival
        print(f"\nIDLE: new mail announced {time.monotonic() - started:.3f} s after delivery began")
        ((uid, _),) = await imap.uid_fetch_since(3, 10)  # the session goes on after IDLE
        assert uid == 4
    assert all("\\Seen" not in f for f in dovecot_server.flags(user).values())


# --- replies --------------------------------------------------------------------------------


async def test_a_reply_while_idling_stops_the_enrollment_within_seconds(inbox: Inbox) -> None:
    received = (await sent_intros(inbox, DANA))[DANA]
    (_, follow) = await touches(inbox.engine, DANA)
    assert follow.state == TouchState.SCHEDULED.value
    watcher = inbox.watcher()
    async with running(watcher):
        await idling(watcher)
        started = time.monotonic()
        # From her own phone's address: only our Message-ID in In-Reply-To can link it.
        await inbox.deliver(reply(received, sender="dana.s@home.example"))
        delivered = time.monotonic() - started

        async def stopped() -> bool:
            return await state_of(inbox.engine, DANA) == ("stopped", "replied")

        latency = await wait_until(stopped, timeout=10, what="enrollment stopped") + delivered
    print(f"\nreply -> stopped: {latency:.3f} s (delivery by doveadm took {delivered:.3f} s)")
    assert latency < 5
    (_, follow) = await touches(inbox.engine, DANA)
    assert follow.state == TouchState.CANCELLED.value
    (message,) = await recorded(inbox.engine)
    assert (
        message.kind == "reply"
        and message.enrollment_id == (await enrollment(inbox.engine, DANA)).id
    )
    inbox.assert_nothing_seen()


async def test_a_reply_is_matched_by_the_sender_address_alone(inbox: Inbox) -> None:
    await sent_intros(inbox, DANA, "ben@initech.example")
    watcher = inbox.watcher(use_idle=False)  # the polling path
    async with running(watcher):
        await wait_until(lambda: watcher.folder_states.get("INBOX") == "polling")
        # A fresh email, no In-Reply-To or References: only the From address links it.
        await inbox.deliver(reply(None, "Can you call me instead?", subject="Your email"))

        async def stopped() -> bool:
            return await state_of(inbox.engine, DANA) == ("stopped", "replied")

        await wait_until(stopped, what="stopped by sender address")
        await asyncio.sleep(1)  # a few more polls: the last message never comes back as new
    assert (watcher.stats.processed, watcher.stats.skipped) == (1, 0)
    assert await state_of(inbox.engine, "ben@initech.example") == ("active", None)
    inbox.assert_nothing_seen()


async def test_restarts_while_replies_arrive_miss_none_and_repeat_none(inbox: Inbox) -> None:
    emails = [f"p{i}@company{i}.example" for i in range(8)]
    received = await sent_intros(inbox, *emails)
    watcher = inbox.watcher()
    arrivals = iter(emails)

    async def deliver(count: int) -> None:
        for _ in range(count):
            email = next(arrivals)
            await inbox.deliver(reply(received[email], sender=email))

    # The first watch starts after what is already in the folder; after that, nothing may
    # slip through a restart, whether mail comes while it runs, stops, or starts.
    async with running(watcher):
        await idling(watcher)
        await deliver(2)
    await deliver(2)  # while nobody watches
    async with running(watcher):
        await deliver(2)  # while it connects and catches up
    async with running(watcher):
        await idling(watcher)
        await deliver(2)

        async def all_stopped() -> bool:
            states = [await state_of(inbox.engine, e) for e in emails]
            return all(s == ("stopped", "replied") for s in states)

        await wait_until(all_stopped, what="every prospect stopped")
    messages = await recorded(inbox.engine)
    assert len(messages) == len(emails)
    assert len({(m.uidvalidity, m.uid) for m in messages}) == len(emails)
    for email in emails:
        assert await replied_events(inbox.engine, email) == 1, email
    assert not any(h.duplicate for h in watcher.stats.handled)
    assert watcher.stats.processed == len(emails)
    inbox.assert_nothing_seen()


async def test_a_new_uidvalidity_is_rescanned_without_acting_twice(inbox: Inbox) -> None:
    emails = [DANA, "ben@initech.example", "cy@hooli.example"]
    received = await sent_intros(inbox, *emails)
    watcher = inbox.watcher()
    await watcher.catch_up_once()  # first watch: the cursor starts here
    first, second = reply(received[DANA]), reply(received[emails[1]], sender=emails[1])
    await inbox.deliver(first)
    await inbox.deliver(second)
    assert len(await watcher.catch_up_once()) == 2
    # The server gives the folder a new UID epoch (as after a rebuild or a migration): every
    # UID now means something new. A copy of Dana's reply also lands again under a new UID.
    await asyncio.to_thread(
        inbox.dovecot._doveadm,
        "mailbox",
        "update",
        "-u",
        inbox.user,
        "--uid-validity",
        "4242",
        "INBOX",
    )
    await inbox.deliver(first)
    await inbox.deliver(reply(received[emails[2]], sender=emails[2]))
    async with running(watcher):

        async def third_stopped() -> bool:
            return await state_of(inbox.engine, emails[2]) == ("stopped", "replied")

        await wait_until(third_stopped, what="the new reply processed")
        await idling(watcher)
    for email in emails:
        assert await replied_events(inbox.engine, email) == 1, email
    messages = await recorded(inbox.engine)
    assert [m.uidvalidity == 4242 for m in messages] == [False, False, True]
    assert watcher.stats.skipped == 3  # the two old replies and the copy, by Message-ID
    inbox.assert_nothing_seen()


async def test_the_watcher_reconnects_after_a_server_crash_and_catches_up(inbox: Inbox) -> None:
    emails = [DANA, "ben@initech.example", "cy@hooli.example"]
    received = await sent_intros(inbox, *emails)
    watcher = inbox.watcher()
    async with running(watcher):
        await idling(watcher)
        connections = watcher.stats.connections
        # Killed in the middle of the IDLE: the connection just drops.
        await asyncio.to_thread(inbox.dovecot.restart, crash=True)
        await inbox.deliver(reply(received[DANA]))
        await inbox.deliver(reply(received[emails[1]], sender=emails[1]))

        async def caught_up() -> bool:
            states = [await state_of(inbox.engine, e) for e in emails[:2]]
            return all(s == ("stopped", "replied") for s in states)

        await wait_until(caught_up, what="caught up after the crash")
        assert watcher.stats.connections > connections
        # Shut down politely this time: a BYE in the middle of the IDLE.
        await idling(watcher)
        await asyncio.to_thread(inbox.dovecot.restart)
        await inbox.deliver(reply(received[emails[2]], sender=emails[2]))

        async def third() -> bool:
            return await state_of(inbox.engine, emails[2]) == ("stopped", "replied")

        await wait_until(third, what="caught up after the shutdown")
    assert len(await recorded(inbox.engine)) == 3
    inbox.assert_nothing_seen()


# --- what a reply does --------------------------------------------------------------------


async def test_an_out_of_office_pauses_until_the_return_date_then_resumes(inbox: Inbox) -> None:
    received = (await sent_intros(inbox, DANA))[DANA]
    watcher = inbox.watcher()
    await watcher.catch_up_once()
    away = reply(
        received,
        "I am out of the office until Monday, March 10, 2025 with limited access to email.",
        subject="Automatic reply: " + str(received.parsed["Subject"]),
        headers={"Auto-Submitted": "auto-replied"},
    )
    await inbox.deliver(away)
    (handled,) = await watcher.catch_up_once()
    assert handled.classification.kind.value == "out_of_office"
    paused = await enrollment(inbox.engine, DANA)
    assert paused.state == "paused" and paused.paused_until is not None
    # Back on Monday the 10th; writing resumes one business day later.
    assert paused.paused_until.astimezone(NEW_YORK).date().isoformat() == "2025-03-11"
    move_to(inbox.engine, local(2025, 3, 10, 12, 0))
    await inbox.engine.resume_due()
    assert (await enrollment(inbox.engine, DANA)).state == "paused"
    move_to(inbox.engine, paused.paused_until + timedelta(minutes=1))
    assert await inbox.engine.resume_due() == 1
    assert await state_of(inbox.engine, DANA) == ("active", None)
    assert await replied_events(inbox.engine, DANA) == 0  # never counted as a reply


async def test_a_reply_racing_a_queued_follow_up_stops_it(inbox: Inbox) -> None:
    received = (await sent_intros(inbox, DANA))[DANA]
    watcher = inbox.watcher()
    await watcher.catch_up_once()
    (_, follow) = await touches(inbox.engine, DANA)
    move_to(inbox.engine, follow.due_at)
    async with inbox.engine.db.transaction() as s:
        assert await tq.claim_due(s, inbox.engine.now(), 10) == [follow.id]
    (_, follow) = await touches(inbox.engine, DANA)
    assert follow.state == TouchState.QUEUED.value  # handed to a worker, not yet sent
    await inbox.deliver(reply(received))
    (handled,) = await watcher.catch_up_once()
    assert handled.enrollments == [(await enrollment(inbox.engine, DANA)).id]
    assert await inbox.sender.send_touch(follow.id) in (Outcome.SKIPPED, Outcome.CANCELLED)
    (_, follow) = await touches(inbox.engine, DANA)
    assert follow.state == TouchState.CANCELLED.value
    assert len(inbox.smtp.messages) == 1  # the intro only


# --- one watcher, and bad messages ----------------------------------------------------------


async def test_one_watcher_per_mailbox_and_a_dead_ones_lease_is_taken_over(inbox: Inbox) -> None:
    received = (await sent_intros(inbox, DANA))[DANA]
    watcher = inbox.watcher(lease_ttl=timedelta(seconds=3))  # a try every second
    await watcher.catch_up_once()
    async with inbox.engine.db.transaction() as s:
        assert await mq.acquire_lease(
            s, watcher.lease, "elsewhere:1", inbox.engine.now(), timedelta(seconds=3)
        )
    with pytest.raises(InvalidState, match="being watched by elsewhere:1"):
        await watcher.catch_up_once()
    await inbox.deliver(reply(received))
    async with running(watcher):
        await asyncio.sleep(0.5)
        assert watcher.folder_states == {}  # waits for the lease; watches nothing
        assert await state_of(inbox.engine, DANA) == ("active", None)
        # The other process died: its lease runs out, this one takes over and catches up.
        move_to(inbox.engine, inbox.engine.now() + timedelta(seconds=4))

        async def stopped() -> bool:
            return await state_of(inbox.engine, DANA) == ("stopped", "replied")

        await wait_until(stopped, what="taken over")
    async with inbox.engine.db.transaction() as s:
        assert await mq.lease_holder(s, watcher.lease, inbox.engine.now()) is None


async def test_a_poisonous_message_is_passed_over_after_three_tries(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    received = await sent_intros(inbox, DANA, "ben@initech.example")
    watcher = inbox.watcher()
    await watcher.catch_up_once()
    process = inbox.processor.process

    async def fragile(mailbox: str, folder: str, uidvalidity: int, uid: int, raw: bytes) -> Handled:
        if b"poison" in raw:
            raise ValueError("cannot digest this one")
        return await process(mailbox, folder, uidvalidity, uid, raw)

    monkeypatch.setattr(inbox.processor, "process", fragile)
    await inbox.deliver(reply(received[DANA], "poison"))
    await inbox.deliver(reply(received["ben@initech.example"], sender="ben@initech.example"))
    assert await watcher.catch_up_once() == []  # tried once: blocks what comes after
    assert await watcher.catch_up_once() == []
    assert await state_of(inbox.engine, "ben@initech.example") == ("active", None)
    (handled,) = await watcher.catch_up_once()  # third failure: passed over, Ben's goes on
    assert handled.classification.sender == "ben@initech.example"
    assert await state_of(inbox.engine, "ben@initech.example") == ("stopped", "replied")
    assert await state_of(inbox.engine, DANA) == ("active", None)  # not acted on
    failed, _ = await recorded(inbox.engine)
    assert "not processed: ValueError: cannot digest this one" in failed.details["reason"]
    assert watcher.stats.given_up == 1
    assert await watcher.catch_up_once() == []  # never tried again


async def test_start_watchers_watches_each_mailbox_with_imap(inbox: Inbox) -> None:
    received = (await sent_intros(inbox, DANA))[DANA]
    stop = asyncio.Event()
    tasks = start_watchers(inbox.engine, inbox.processor, stop, **FAST)
    try:
        assert [t.get_name() for t in tasks] == [f"watcher:{OWNER}"]  # Marcus has no imap:

        async def watching() -> bool:
            async with inbox.engine.db.transaction() as s:
                return await iq.cursor(s, OWNER, "INBOX") is not None

        await wait_until(watching, what="the first watch")
        await inbox.deliver(reply(received))

        async def stopped() -> bool:
            return await state_of(inbox.engine, DANA) == ("stopped", "replied")

        await wait_until(stopped, what="stopped through start_watchers")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
