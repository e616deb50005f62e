"""A mailbox's daily cap holds when several processes send from it, each remembering the sends
it made itself (runtime/recent_sends.py): the memory is trusted only while no one else has sent
from the mailbox, and the database decides once the cap may be reached. Real clock, real SMTP
server, both databases."""

from __future__ import annotations

from pathlib import Path

import yaml
from helpers import OWNER, load, make_project, one_email_sequence, person
from servers.smtp import RecordingSMTPServer

from sequencer.core.states import TouchState
from sequencer.runtime.clock import SystemClock
from sequencer.runtime.engine import Engine
from sequencer.runtime.enrollment import enroll
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Outcome, Sender
from sequencer.store import touches as tq
from sequencer.store.database import Database

SECRET = b"cap-test-secret-0123456789abcdef"
CAP = 3
#: One immediate email from Ana's mailbox, at any hour, with no per-prospect limits.
ONE_EMAIL = one_email_sequence("note")
NOTE = """\
---
subject: "A note"
---
Hi {{ prospect.first_name | default("there") }}, one note.

{{ footer }}
"""


async def test_two_senders_on_one_mailbox_never_pass_its_daily_cap(
    database_url: str, tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    project = make_project(tmp_path, {"one": ONE_EMAIL}, templates={"note": NOTE}, examples=False)
    config = yaml.safe_load((tmp_path / "sequencer.yaml").read_text())
    for box in config["mailboxes"]:
        box["smtp"] = {"host": "127.0.0.1", "port": smtp.port, "security": "none", "timeout": 5}
        box["daily_cap"] = CAP
        box["min_spacing"] = "0 minutes"
    config["sending"] = {"company_daily_limit": "none"}
    (tmp_path / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    database = Database(database_url)
    try:
        engine = Engine(database, load(project), clock=SystemClock())
        await engine.sync_sequences()
        rows = [person(f"p{i}@company{i}.example", line=i + 2, timezone="UTC") for i in range(6)]
        report = await enroll(engine, "one", rows, owner=OWNER)
        assert not report.skipped
        async with database.transaction() as s:
            ids = await tq.claim_due(s, engine.now(), 10)
        assert len(ids) == 6
        # Two senders, as two worker processes would be, each with its own memory.
        first = Sender(engine, Mailboxes(engine.catalog.config), secret=SECRET)
        second = Sender(engine, Mailboxes(engine.catalog.config), secret=SECRET)
        # first, first (its memory alone), second (the first's sends in the database), then
        # each again after the other has sent: the cap is reached on the third email.
        order = [first, first, second, first, second, second]
        outcomes = [await sender.send_touch(i) for sender, i in zip(order, ids, strict=True)]
        for sender in (first, second):
            await sender.mailboxes.close()
        async with database.transaction() as s:
            states = [(await tq.get_touch(s, i)).state for i in ids]  # type: ignore[union-attr]
    finally:
        await database.close()

    assert outcomes == [Outcome.SENT] * CAP + [Outcome.LATER] * (6 - CAP), outcomes
    assert states.count(TouchState.SENT.value) == CAP
    assert len(smtp.wait_for(CAP)) == CAP
