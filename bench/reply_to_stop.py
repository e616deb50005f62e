"""Reply-to-stop benchmark: replies delivered one at a time into a real Dovecot while
`sequencer run` watches the inbox; time until the enrollment is stopped and its pending
touches cancelled; p50, p99. Target: p99 under 2 seconds (the commercial tools poll every 1 to
30 minutes).

`sequencer run` runs as a child process on a SQLite file with an `imap:` block on Ana's
mailbox, as a single rep runs it. This process enrolls ``--enrollments`` prospects into the
example `inbound-demo-request` sequence through the library, waits until each first email
reached the loopback SMTP server, then for each prospect in turn delivers a reply threaded
under that email (`doveadm save`, as the mail server's delivery agent does) and polls the
SQLite file every few milliseconds until the enrollment is `stopped` with no scheduled or
queued touch left. Times run from the start of the delivery.

Baseline in the same run (the floor): a plain aioimaplib client that sits in IDLE on the same
folder the whole time, and the moment Dovecot tells it about each new message (`* n EXISTS`),
measured from the same start. Ratio: engine p99 / floor p99.

Usage: .venv/bin/python bench/reply_to_stop.py [--enrollments 200] [--pause 0.2]
Appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import aioimaplib
from common import heading, machine, record
from latency_common import (
    ANA,
    IMAP_PASSWORD_ENV,
    Runner,
    TimedSMTPServer,
    lead,
    library_engine,
    ms,
    read_only,
    summary,
    write_project,
)
from servers.dovecot import DovecotServer
from servers.smtp import ReceivedMessage

SEQUENCE = "inbound-demo-request"
TARGET_P99 = 2.0
POLL = 0.005
TIMEOUT = 20.0


@dataclass
class IdleFloor:
    """A plain aioimaplib client in IDLE on INBOX: when each `* n EXISTS` arrived."""

    host: str
    port: int
    user: str
    password: str
    exists_at: dict[int, float] = field(default_factory=dict)
    _client: aioimaplib.IMAP4 | None = None
    _task: asyncio.Task[None] | None = None
    _idle: asyncio.Future[object] | None = None

    async def start(self) -> None:
        client = aioimaplib.IMAP4(host=self.host, port=self.port, timeout=10)
        await client.wait_hello_from_server()
        await client.login(self.user, self.password)
        await client.examine("INBOX")
        client.protocol.state = aioimaplib.SELECTED  # aioimaplib tracks SELECT, not EXAMINE
        self._client = client
        self._idle = await client.idle_start(timeout=25 * 60)
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        assert self._client is not None
        while True:
            lines = await self._client.wait_server_push(timeout=25 * 60)
            now = time.monotonic()
            for line in lines if isinstance(lines, list) else [lines]:
                words = bytes(line).split() if isinstance(line, bytes | bytearray) else []
                if len(words) == 2 and words[1] == b"EXISTS" and words[0].isdigit():
                    self.exists_at.setdefault(int(words[0]), now)

    async def wait_for(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while count not in self.exists_at:
            if time.monotonic() > deadline:
                raise SystemExit(f"the plain IDLE client never heard of message {count}")
            await asyncio.sleep(POLL)
        return self.exists_at[count]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            self._client.idle_done()
            if self._idle is not None:
                await asyncio.wait_for(self._idle, 10)
            await self._client.logout()


def reply_to(message: ReceivedMessage) -> bytes:
    """The prospect's answer, threaded under our email (In-Reply-To and References)."""
    ours = message.parsed
    answer = EmailMessage()
    sender = message.rcpt_tos[0]
    answer["From"] = f"Prospect <{sender}>"
    answer["To"] = ANA
    answer["Subject"] = f"Re: {ours['Subject']}"
    answer["Date"] = format_datetime(time_now())
    answer["Message-ID"] = make_msgid(domain=sender.split("@")[1])
    answer["In-Reply-To"] = ours["Message-ID"]
    answer["References"] = ours["Message-ID"]
    answer.set_content(
        "Thanks! Thursday at 10 works for me.\n\n"
        f"On Tuesday Ana wrote:\n> {ours.get_body(('plain',)).get_content()[:300]}\n"
    )
    return answer.as_bytes()


def time_now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


def stopped(db: object, enrollment_id: int) -> bool:
    """Whether the enrollment is stopped with nothing left scheduled or queued."""
    row = db.execute(  # type: ignore[attr-defined]
        "SELECT e.state, (SELECT count(*) FROM touches t WHERE t.enrollment_id = e.id "
        "AND t.state IN ('scheduled', 'queued')) FROM enrollments e WHERE e.id = ?",
        (enrollment_id,),
    ).fetchone()
    return bool(row) and row[0] == "stopped" and row[1] == 0


async def measure(
    work: Path,
    dovecot: DovecotServer,
    user: str,
    password: str,
    smtp: TimedSMTPServer,
    emails: list[str],
    pause: float,
) -> tuple[list[float], list[float], list[float]]:
    """(engine, floor, delivery) seconds per reply."""
    from sequencer.runtime.enrollment import enroll

    async with library_engine(work) as engine:
        report = await enroll(
            engine, SEQUENCE, [lead(e, i + 2) for i, e in enumerate(emails)], owner=ANA
        )
        if report.enrolled != len(emails):
            raise SystemExit(f"not every prospect was enrolled: {report.skipped[:3]}")
    await asyncio.to_thread(smtp.wait_for_recipients, emails, 120)
    ours = {m.rcpt_tos[0].lower(): m for m in smtp.messages}
    db = read_only(work)
    ids = dict(
        db.execute(
            "SELECT p.email, e.id FROM enrollments e JOIN prospects p ON p.id = e.prospect_id"
        ).fetchall()
    )
    # The watcher has placed its cursor and is idle once the cursor row exists.
    deadline = time.monotonic() + 60
    while not db.execute("SELECT 1 FROM mailbox_cursors").fetchone():
        if time.monotonic() > deadline:
            raise SystemExit("the watcher never started watching INBOX; see run.log")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    assert dovecot.port is not None
    floor = IdleFloor("127.0.0.1", dovecot.port, user, password)
    await floor.start()
    engine_s: list[float] = []
    floor_s: list[float] = []
    delivery_s: list[float] = []
    try:
        for number, email in enumerate(emails, start=1):
            raw = reply_to(ours[email])
            started = time.monotonic()
            await asyncio.to_thread(dovecot.deliver, user, raw)
            delivery_s.append(time.monotonic() - started)
            deadline = started + TIMEOUT
            while not stopped(db, ids[email]):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{email}'s enrollment not stopped {TIMEOUT:g} s after reply")
                await asyncio.sleep(POLL)
            engine_s.append(time.monotonic() - started)
            floor_s.append(await floor.wait_for(number, TIMEOUT) - started)
            await asyncio.sleep(pause)
    finally:
        await floor.stop()
    reasons = db.execute(
        "SELECT stop_reason, count(*) FROM enrollments GROUP BY stop_reason"
    ).fetchall()
    if reasons != [("replied", len(emails))]:
        raise SystemExit(f"expected every enrollment stopped as replied, found {reasons}")
    db.close()
    return engine_s, floor_s, delivery_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enrollments", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between replies")
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    emails = [f"prospect{i}@company{i}.example" for i in range(args.enrollments)]
    user, password = f"ana{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    with (
        tempfile.TemporaryDirectory() as tmp,
        DovecotServer() as dovecot,
        TimedSMTPServer() as smtp,
    ):
        dovecot.add_user(user, password)
        assert dovecot.port is not None
        work = Path(tmp)
        env = write_project(work, smtp.port, imap=(dovecot.port, user))
        env[IMAP_PASSWORD_ENV] = password
        runner = Runner(work, env)
        try:
            runner.wait_for_log("Watching 1 inbox")
            engine_s, floor_s, delivery_s = asyncio.run(
                measure(work, dovecot, user, password, smtp, emails, args.pause)
            )
        finally:
            log = runner.stop()
        if len(smtp.messages) != args.enrollments:
            raise SystemExit(
                f"{len(smtp.messages) - args.enrollments} email(s) went out after a reply"
            )

    p50, p99, _ = summary(engine_s)
    floor_p99 = summary(floor_s)[1]
    verdict = "met" if p99 < TARGET_P99 else "MISSED"
    lines = [
        heading(f"Reply to stop, {args.enrollments} enrollments, sqlite"),
        "",
        f"Machine: {machine()}",
        "",
        f"`sequencer run` watching a Dovecot INBOX (IDLE); {args.enrollments} active "
        f"enrollments in `{SEQUENCE}`; one threaded reply delivered at a time (doveadm save, "
        f"{args.pause:g} s apart); time from the start of the delivery until the enrollment "
        "is stopped and its pending touches cancelled.",
        "",
        "| run | p50 | p99 | max |",
        "|---|---:|---:|---:|",
        f"| sequencer run: delivery -> enrollment stopped | "
        f"{' | '.join(ms(v) for v in summary(engine_s))} |",
        f"| baseline: plain aioimaplib IDLE client told of the message | "
        f"{' | '.join(ms(v) for v in summary(floor_s))} |",
        f"| (the delivery itself: doveadm save) | "
        f"{' | '.join(ms(v) for v in summary(delivery_s))} |",
        "",
        f"Ratio engine p99 / floor p99: {p99 / floor_p99:.2f}x. "
        f"Target p99 < {TARGET_P99:g} s: {verdict} (p50 {ms(p50)}, p99 {ms(p99)}).",
        "",
    ]
    if "ERROR" in log:
        lines += ["Errors in the runner's log:", "", "```", log[-2000:], "```", ""]
    record("\n".join(lines), enabled=not args.no_record)


if __name__ == "__main__":
    main()
