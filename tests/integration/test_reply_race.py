"""The reply race under load (invariant 2, never after a reply): twenty enrollments have their
follow-ups due and claimed by the running LocalRunner while the prospects' replies land in a
real Dovecot and the IMAP watcher records them. No follow-up may start after its enrollment's
reply was recorded.

"Start" and "recorded" are read from the database itself, not from clocks: triggers (created
by the test, on both backends) append to an audit table, in commit-safe order, the moment a
touch turns `sending` and the moment an enrollment turns `stopped`. Both updates happen under
the enrollment's row lock (PostgreSQL) or the single writer (SQLite), so the audit's order is
the order the two transactions really took. The SMTP server's received list must agree: the
follow-ups it got are exactly the touches that started before their reply.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import enrollment, move_to, touches
from servers.dovecot import DovecotServer
from servers.smtp import FaultySMTPServer
from sqlalchemy import text
from test_watcher import (
    PASSWORD_ENV,
    Inbox,
    idling,
    replied_events,
    reply,
    running,
    sent_intros,
    state_of,
    wait_until,
    watched_inbox,
)

from sequencer.runtime.dispatcher import LocalRunner
from sequencer.runtime.engine import Engine
from sequencer.store.database import Database
from sequencer.store.models import Touch

PROSPECTS = 20
EMAILS = [f"p{i:02d}@company{i}.example" for i in range(PROSPECTS)]
#: How long the SMTP server takes to accept each follow-up (well inside the 2 s timeout).
FOLLOW_UP_SECONDS = 0.25
#: Replies recorded before the runner starts: their follow-ups must all be cancelled.
EARLY = 5

SQLITE_AUDIT = [
    "CREATE TABLE race_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, ref INTEGER)",
    """CREATE TRIGGER race_sending AFTER UPDATE OF state ON touches
       WHEN NEW.state = 'sending' AND OLD.state <> 'sending'
       BEGIN INSERT INTO race_audit (kind, ref) VALUES ('sending', NEW.id); END""",
    """CREATE TRIGGER race_stopped AFTER UPDATE OF state ON enrollments
       WHEN NEW.state = 'stopped' AND OLD.state <> 'stopped'
       BEGIN INSERT INTO race_audit (kind, ref) VALUES ('stopped', NEW.id); END""",
]
POSTGRES_AUDIT = [
    "CREATE TABLE race_audit (id BIGSERIAL PRIMARY KEY, kind TEXT, ref BIGINT)",
    """CREATE FUNCTION race_sending() RETURNS trigger AS $$ BEGIN
       INSERT INTO race_audit (kind, ref) VALUES ('sending', NEW.id); RETURN NEW; END
       $$ LANGUAGE plpgsql""",
    """CREATE FUNCTION race_stopped() RETURNS trigger AS $$ BEGIN
       INSERT INTO race_audit (kind, ref) VALUES ('stopped', NEW.id); RETURN NEW; END
       $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER race_sending AFTER UPDATE OF state ON touches FOR EACH ROW
       WHEN (NEW.state = 'sending' AND OLD.state <> 'sending') EXECUTE FUNCTION race_sending()""",
    """CREATE TRIGGER race_stopped AFTER UPDATE OF state ON enrollments FOR EACH ROW
       WHEN (NEW.state = 'stopped' AND OLD.state <> 'stopped') EXECUTE FUNCTION race_stopped()""",
]


async def install_audit(db: Database) -> None:
    statements = POSTGRES_AUDIT if db.url.startswith("postgresql") else SQLITE_AUDIT
    async with db.transaction() as s:
        for statement in statements:
            await s.execute(text(statement))


async def audit(db: Database) -> list[tuple[int, str, int]]:
    async with db.transaction() as s:
        rows = await s.execute(text("SELECT id, kind, ref FROM race_audit ORDER BY id"))
        return [(int(i), str(k), int(r)) for i, k, r in rows.all()]


async def follow_up(engine: Engine, email: str) -> Touch:
    (follow,) = [t for t in await touches(engine, email) if t.step_id == "follow"]
    return follow


@pytest.fixture
async def inbox(
    database_url: str,
    tmp_path: Path,
    dovecot_server: DovecotServer,
    imap_user: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Inbox]:
    """test_watcher's watched inbox, with an SMTP server that takes its time over each
    follow-up (its reply comes FOLLOW_UP_SECONDS after the content), as real ones do: sends
    then last long enough for replies to land while others wait their turn."""
    user, password = imap_user
    monkeypatch.setenv(PASSWORD_ENV, password)
    plan = {email: ("ok", "slow-after-data") for email in EMAILS}
    with FaultySMTPServer(plan=plan, stall_seconds=FOLLOW_UP_SECONDS) as smtp:
        async with watched_inbox(database_url, tmp_path, smtp, dovecot_server, user) as inbox:
            yield inbox


async def test_no_follow_up_starts_after_its_reply_was_recorded(inbox: Inbox) -> None:
    engine = inbox.engine
    emails = EMAILS
    intros = await sent_intros(inbox, *emails)
    follow_ups = {}
    for email in emails:
        follow = await follow_up(engine, email)
        follow_ups[email] = follow
    move_to(engine, max(t.due_at for t in follow_ups.values()))
    await install_audit(engine.db)
    chance = random.Random(PROSPECTS)
    early, racing = emails[:EARLY], chance.sample(emails[EARLY:], PROSPECTS - EARLY)

    watcher = inbox.watcher()
    runner = LocalRunner(engine, inbox.sender, concurrency=8, poll=0.02)
    began = time.monotonic()
    async with running(watcher):
        await idling(watcher)
        for email in early:
            await inbox.deliver(reply(intros[email], sender=email))

        async def early_stopped() -> bool:
            states = [await state_of(engine, e) for e in early]
            return all(s == ("stopped", "replied") for s in states)

        await wait_until(early_stopped, what="the early replies recorded")
        gaps = [chance.uniform(0, 0.05) for _ in racing]

        async def deliver_racing() -> None:
            for email, gap in zip(racing, gaps, strict=True):
                await inbox.deliver(reply(intros[email], sender=email))
                await asyncio.sleep(gap)

        # The rest land while the runner claims and sends the follow-ups: the first is on its
        # way before the runner starts, the others while it works.
        delivering = asyncio.create_task(deliver_racing())
        await asyncio.sleep(0.05)
        stop = asyncio.Event()
        sending = asyncio.create_task(runner.run(stop))
        try:
            await delivering

            async def all_settled() -> bool:
                states = [await state_of(engine, e) for e in emails]
                ours = [(await follow_up(engine, e)).state for e in emails]
                return all(s == ("stopped", "replied") for s in states) and all(
                    state in ("sent", "cancelled") for state in ours
                )

            await wait_until(all_settled, timeout=30, what="every reply recorded")
        finally:
            stop.set()
            await asyncio.wait_for(sending, 30)
    seconds = time.monotonic() - began

    log = await audit(engine.db)
    started = {ref: i for i, kind, ref in log if kind == "sending"}
    stopped = {ref: i for i, kind, ref in log if kind == "stopped"}
    received = Counter(str(m.parsed["Message-ID"]) for m in inbox.smtp.messages)
    outcomes: Counter[str] = Counter()
    for email in emails:
        follow = await follow_up(engine, email)
        enrolled = await enrollment(engine, email)
        where = f"{email} ({follow.state})"
        assert enrolled.id in stopped, where
        assert await replied_events(engine, email) == 1, where
        outcomes[follow.state] += 1
        if follow.id in started:
            # It started, so it started before the reply was recorded, and it went out once.
            assert started[follow.id] < stopped[enrolled.id], (where, log)
            assert follow.state == "sent" and received[str(follow.message_id)] == 1, where
        else:
            assert follow.state == "cancelled", where
            assert follow.message_id is None or follow.message_id not in received, where
        if email in early:
            assert follow.state == "cancelled", where
    # The server got the intros and exactly the follow-ups that started in time.
    assert len(inbox.smtp.messages) == PROSPECTS + outcomes["sent"]
    assert all(n == 1 for n in received.values())
    print(
        f"\nreply race [{engine.db.url.split(':')[0]}]: {PROSPECTS} enrollments, follow-ups "
        f"{dict(outcomes)}, audit rows {len(log)}, seconds {seconds:.1f}"
    )
