"""Inbox catch-up benchmark: 20,000 messages waiting in a mailbox after downtime; messages
processed per second.

A real Dovecot and `sequencer run` (a child process on a SQLite file): ``--enrolled`` prospects
are enrolled into the example `inbound-demo-request` sequence and sent their first email, the
watcher places its cursor on the empty INBOX, and `sequencer run` is stopped. While it is down,
``--messages`` messages arrive (written straight into the Maildir, then indexed by Dovecot,
which is timed apart): threaded replies, out-of-office answers, bounces and unsubscribe
requests from the enrolled prospects, and, for the rest, what an inbox mostly holds
(newsletters with HTML, notifications, colleagues' mail, strangers writing in, a few large
attachments). Then `sequencer inbox check <mailbox> --catch-up --json` (the same catch-up the
watcher of `sequencer run` does after every reconnect) processes the lot; the figures are its
wall time and peak memory, and what it did is checked against the mix.

Baseline in the same run: a plain aioimaplib loop in its own process that searches the same
folder and fetches the same messages whole, in batches of the watcher's size, and does nothing
with them (run once to warm the caches, then measured). Ratio: engine rate / plain rate.

Usage: .venv/bin/python bench/inbox_catchup.py [--messages 20000] [--enrolled 300]
Appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from common import heading, machine, record, run_measured
from latency_common import (
    ANA,
    IMAP_PASSWORD_ENV,
    SEQUENCER,
    Runner,
    TimedSMTPServer,
    lead,
    library_engine,
    read_only,
    run_to_file,
    write_project,
)
from servers.dovecot import DovecotServer
from servers.smtp import ReceivedMessage

SEQUENCE = "inbound-demo-request"
# Shares of the enrolled prospects that answer, and how; the rest stay silent.
PROSPECT_MIX = (("reply", 0.60), ("out_of_office", 0.15), ("bounce", 0.10), ("unsubscribe", 0.05))
# Shares of the other mail.
OTHER_MIX = (
    ("newsletter", 0.45),
    ("notification", 0.20),
    ("colleague", 0.15),
    ("stranger", 0.18),
    ("attachment", 0.02),
)

PLAIN_LOOP = r"""
import asyncio, sys, aioimaplib
async def main(host, port, user, password, batch):
    client = aioimaplib.IMAP4(host=host, port=int(port), timeout=120)
    await client.wait_hello_from_server()
    await client.login(user, password)
    await client.examine("INBOX")
    client.protocol.state = aioimaplib.SELECTED  # aioimaplib tracks SELECT, not EXAMINE
    found = await client.uid_search("ALL", charset=None)
    uids = sorted(int(word) for word in bytes(found.lines[0]).split())
    count = size = 0
    for start in range(0, len(uids), int(batch)):
        chunk = ",".join(str(uid) for uid in uids[start : start + int(batch)])
        fetched = await client.uid("fetch", chunk, "(UID BODY.PEEK[])")
        for line in fetched.lines:
            if isinstance(line, bytearray):
                count += 1
                size += len(line)
    await client.logout()
    print(count, size)
asyncio.run(main(*sys.argv[1:]))
"""


# --- the mail that piles up -----------------------------------------------------------------


VOCABULARY = [
    "forecast",
    "volume",
    "labor",
    "planning",
    "shift",
    "warehouse",
    "freight",
    "dock",
    "schedule",
    "peak",
    "season",
    "dashboard",
    "team",
    "quarter",
    "budget",
    "pilot",
    "rollout",
    "carrier",
    "inbound",
    "outbound",
    "accuracy",
    "week",
    "report",
    "meeting",
    "update",
    "question",
    "thanks",
    "review",
    "numbers",
    "next",
    "steps",
    "pricing",
    "contract",
]


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(count))


def _paragraphs(rng: random.Random, count: int) -> str:
    return "\n\n".join(_words(rng, rng.randint(30, 80)).capitalize() + "." for _ in range(count))


def _head(sender: str, subject: str, when: datetime, message_id: str, **extra: str) -> str:
    lines = [
        f"Return-Path: <{sender.split('<')[-1].rstrip('>')}>",
        f"Delivered-To: {ANA}",
        f"From: {sender}",
        f"To: Ana Reyes <{ANA}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        *(f"{name.replace('_', '-')}: {value}" for name, value in extra.items()),
    ]
    return "\r\n".join(lines) + "\r\n"


def _text(head: str, body: str) -> bytes:
    mime = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    return (head + mime + body.replace("\n", "\r\n") + "\r\n").encode()


def prospect_message(kind: str, ours: ReceivedMessage, when: datetime, n: int) -> bytes:
    """What an enrolled prospect (or their mail server) sends back to our first email."""
    email = ours.rcpt_tos[0]
    domain = email.split("@")[1]
    our_id = str(ours.parsed["Message-ID"])
    subject = str(ours.parsed["Subject"])
    quoted = "> " + ours.parsed.get_body(("plain",)).get_content()[:600].replace("\n", "\n> ")
    thread = {"In_Reply_To": our_id, "References": our_id}
    if kind == "reply":
        head = _head(
            f"Prospect {n} <{email}>", f"Re: {subject}", when, f"<r{n}@{domain}>", **thread
        )
        return _text(head, f"Thanks, Thursday at 10 works.\n\nOn Tuesday Ana wrote:\n{quoted}\n")
    if kind == "unsubscribe":
        head = _head(f"<{email}>", "Unsubscribe", when, f"<u{n}@{domain}>", **thread)
        return _text(head, "Please remove me from your list.\n")
    if kind == "out_of_office":
        back = (when + timedelta(days=10)).strftime("%A, %B %d, %Y")
        head = _head(
            f"<{email}>",
            f"Automatic reply: {subject}",
            when,
            f"<o{n}@{domain}>",
            Auto_Submitted="auto-replied",
            X_Auto_Response_Suppress="All",
            **thread,
        )
        return _text(head, f"I am out of the office until {back} with limited access to email.\n")
    boundary = f"b{n}x"
    head = _head(
        f"Mail Delivery System <MAILER-DAEMON@mx.{domain}>",
        "Undelivered Mail Returned to Sender",
        when,
        f"<d{n}@mx.{domain}>",
        Auto_Submitted="auto-replied",
        Content_Type=f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
    )
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.example.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{email}>: host mx.{domain} said: 550 5.1.1 <{email}>: Recipient address "
        "rejected: User unknown in virtual mailbox table\r\n\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.{domain}\r\n\r\n"
        f"Final-Recipient: rfc822; {email}\r\nOriginal-Recipient: rfc822;{email}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{email}>: Recipient address rejected\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: Ana Reyes <{ANA}>\r\nTo: <{email}>\r\nSubject: {subject}\r\n"
        f"Message-ID: {our_id}\r\n\r\n--{boundary}--\r\n"
    )
    return (head + "\r\n" + body).encode()


def other_message(kind: str, rng: random.Random, when: datetime, n: int) -> bytes:
    """Mail that has nothing to do with a sequence (strangers' mail is a reply from nobody
    enrolled, so it is matched and finds nothing)."""
    if kind == "newsletter":
        sender = f"news@vendor{n % 40}.example"
        boundary = f"n{n}"
        head = _head(
            f"Vendor {n % 40} <{sender}>",
            f"This week: {_words(rng, 6)}",
            when,
            f"<nl{n}@vendor{n % 40}.example>",
            List_Id=f"<weekly.vendor{n % 40}.example>",
            List_Unsubscribe=f"<https://vendor{n % 40}.example/u/{n}>",
            Precedence="bulk",
            Content_Type=f'multipart/alternative; boundary="{boundary}"',
        )
        text = _paragraphs(rng, 6)
        html = "".join(
            f'<tr><td style="padding:12px;font-family:Arial">{_paragraphs(rng, 1)}</td></tr>'
            for _ in range(rng.randint(8, 20))
        )
        body = (
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body><table>{html}</table></body></html>\r\n--{boundary}--\r\n"
        )
        return (head + "\r\n" + body).encode()
    if kind == "notification":
        head = _head(
            "Calendar <noreply@calendar.example>",
            f"Reminder: {_words(rng, 4)}",
            when,
            f"<cal{n}@calendar.example>",
            Auto_Submitted="auto-generated",
        )
        return _text(head, _paragraphs(rng, 2))
    if kind == "colleague":
        head = _head(
            f"Colleague <colleague{n % 25}@northwind.example>",
            f"Re: {_words(rng, 4)}",
            when,
            f"<c{n}@northwind.example>",
        )
        return _text(head, _paragraphs(rng, rng.randint(1, 4)))
    sender = f"someone{n}@stranger{n % 500}.example"
    head = _head(
        f"Someone <{sender}>", f"Question about {_words(rng, 3)}", when, f"<s{n}@x.example>"
    )
    if kind == "stranger":
        return _text(head, _paragraphs(rng, rng.randint(1, 3)))
    boundary = f"a{n}"
    attachment = "\r\n".join(
        secrets.token_urlsafe(57)[:76] for _ in range(rng.randint(1500, 4000))
    )  # 110 to 300 KB of base64
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{_paragraphs(rng, 1)}\r\n--{boundary}\r\nContent-Type: application/pdf; "
        f'name="deck{n}.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
        f'Content-Disposition: attachment; filename="deck{n}.pdf"\r\n\r\n'
        f"{attachment}\r\n--{boundary}--\r\n"
    )
    head += f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
    return (head + "\r\n" + body).encode()


def pile_up(
    maildir: Path, ours: list[ReceivedMessage], total: int, seed: int
) -> tuple[Counter[str], Counter[str], int]:
    """Write ``total`` messages into the Maildir's new/ folder, in arrival order, as a delivery
    agent does; (kinds by prospect, kinds of other mail, bytes written)."""
    rng = random.Random(seed)
    plan: list[tuple[str, ReceivedMessage | None]] = []
    start = 0
    for kind, share in PROSPECT_MIX:
        count = round(share * len(ours))
        plan += [(kind, m) for m in ours[start : start + count]]
        start += count
    others = total - len(plan)
    for kind, share in OTHER_MIX:
        plan += [(kind, None)] * round(share * others)
    plan += [("stranger", None)] * (total - len(plan))
    plan = plan[:total]
    rng.shuffle(plan)
    new = maildir / "new"
    owner = new.stat()
    began = datetime.now(UTC) - timedelta(hours=60)
    size = 0
    stamp = int(time.time())
    for n, (kind, ours_message) in enumerate(plan):
        when = began + timedelta(seconds=n * 10)
        if ours_message is not None:
            raw = prospect_message(kind, ours_message, when, n)
        else:
            raw = other_message(kind, rng, when, n)
        name = f"{stamp}.M{n:06d}P{os.getpid()}.bench,S={len(raw)}"
        path = maildir / "tmp" / name
        path.write_bytes(raw)
        os.chown(path, owner.st_uid, owner.st_gid)
        path.rename(new / name)
        size += len(raw)
    prospects = Counter(kind for kind, m in plan if m is not None)
    other = Counter(kind for kind, m in plan if m is None)
    return prospects, other, size


# --- the run ----------------------------------------------------------------------------------


async def enroll_and_send(work: Path, smtp: TimedSMTPServer, emails: list[str]) -> None:
    from sequencer.runtime.enrollment import enroll

    async with library_engine(work) as engine:
        rows = [lead(e, i + 2) for i, e in enumerate(emails)]
        report = await enroll(engine, SEQUENCE, rows, owner=ANA)
        if report.enrolled != len(emails):
            raise SystemExit(f"not every prospect was enrolled: {report.skipped[:3]}")
    await asyncio.to_thread(smtp.wait_for_recipients, emails, 300)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--enrolled", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    from sequencer.runtime.watcher import BATCH

    emails = [f"prospect{i}@company{i}.example" for i in range(args.enrolled)]
    user, password = f"ana{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    with (
        tempfile.TemporaryDirectory() as tmp,
        DovecotServer() as dovecot,
        TimedSMTPServer() as smtp,
    ):
        dovecot.add_user(user, password)
        assert dovecot.port is not None and dovecot.base_dir is not None
        work = Path(tmp)
        env = write_project(work, smtp.port, imap=(dovecot.port, user))
        env[IMAP_PASSWORD_ENV] = password

        # Up: prospects enrolled and written to, the watcher's cursor on the empty INBOX.
        runner = Runner(work, env)
        try:
            runner.wait_for_log("Watching 1 inbox")
            asyncio.run(enroll_and_send(work, smtp, emails))
            db = read_only(work)
            deadline = time.monotonic() + 60
            while not db.execute("SELECT 1 FROM mailbox_cursors").fetchone():
                if time.monotonic() > deadline:
                    raise SystemExit("the watcher never started watching INBOX; see run.log")
                time.sleep(0.1)
        finally:
            runner.stop()
        ours = sorted(smtp.messages, key=lambda m: m.rcpt_tos[0])

        # Down: the mail piles up.
        maildir = dovecot.base_dir / "mail" / user / "Maildir"
        started = time.perf_counter()
        by_prospect, other, size = pile_up(maildir, ours, args.messages, args.seed)
        written_s = time.perf_counter() - started
        started = time.perf_counter()
        status = dovecot._doveadm(
            "-f", "flow", "mailbox", "status", "-u", user, "messages uidnext", "INBOX"
        )
        indexed_s = time.perf_counter() - started
        counts = dict(word.split("=") for word in status.split() if "=" in word)
        if int(counts["messages"]) != args.messages:
            raise SystemExit(f"Dovecot sees {counts['messages']} messages, not {args.messages}")
        last_uid = int(counts["uidnext"]) - 1

        # Baseline: the plain loop, once to warm the caches, then measured.
        script = work / "plain_loop.py"
        script.write_text(PLAIN_LOOP)
        plain_args = [sys.executable, str(script), "127.0.0.1", str(dovecot.port), user, password]
        plain_args.append(str(BATCH))
        run_measured(plain_args, os.environ, work)
        plain_s, plain_rss, out = run_measured(plain_args, os.environ, work)
        fetched = int(out.split()[0])
        if fetched != args.messages:
            raise SystemExit(f"the plain loop fetched {fetched} messages, not {args.messages}")

        # Back up: the engine catches up.
        engine_s, engine_rss, out = run_to_file(
            [*SEQUENCER, "inbox", "check", ANA, "--catch-up", "--json"],
            env,
            work,
            work / "catch-up.json",
        )
        (report,) = json.loads(out)
        catch_up = report["catch_up"]
        check_outcome(work, catch_up, by_prospect, other, args.messages, last_uid)

    rate, plain_rate = args.messages / engine_s, args.messages / plain_s
    mix = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in sorted(by_prospect.items()))
    mix_other = ", ".join(f"{n:,} {k}" for k, n in sorted(other.items()))
    kinds = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in sorted(catch_up["kinds"].items()))
    lines = [
        heading(f"Inbox catch-up, {args.messages:,} messages, sqlite"),
        "",
        f"Machine: {machine()}",
        "",
        f"{args.messages:,} messages ({size / 2**20:,.0f} MiB) waiting in a Dovecot INBOX "
        f"after downtime. From {args.enrolled} enrolled prospects: {mix}; other mail: "
        f"{mix_other}. Classified as: {kinds}.",
        "",
        "| run | seconds | messages/s | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
        f"| sequencer inbox check --catch-up | {engine_s:.1f} | {rate:,.0f} | {engine_rss} |",
        f"| baseline: plain aioimaplib fetch loop, batches of {BATCH} | {plain_s:.1f} | "
        f"{plain_rate:,.0f} | {plain_rss} |",
        "",
        f"Ratio engine/plain: {rate / plain_rate:.2f}x. Not counted: writing the Maildir "
        f"({written_s:.1f} s) and Dovecot indexing it ({indexed_s:.1f} s).",
        "",
    ]
    record("\n".join(lines), enabled=not args.no_record)


def check_outcome(
    work: Path,
    catch_up: dict[str, object],
    by_prospect: Counter[str],
    other: Counter[str],
    total: int,
    last_uid: int,
) -> None:
    """The catch-up processed everything, once, and did what each message asks."""
    if catch_up.get("processed") != total or catch_up.get("passed_over"):
        raise SystemExit(f"catch-up did not process all {total} messages: {catch_up}")
    db = read_only(work)
    (cursor,) = db.execute("SELECT last_uid FROM mailbox_cursors").fetchone()
    (recorded,) = db.execute("SELECT count(*) FROM inbound_messages").fetchone()
    if cursor != last_uid or recorded != total:
        raise SystemExit(f"cursor at {cursor} of {last_uid}; {recorded} of {total} recorded")
    states = Counter(
        f"{state}:{reason}" if reason else state
        for state, reason in db.execute("SELECT state, stop_reason FROM enrollments")
    )
    expected = {
        "stopped:replied": by_prospect["reply"],
        "stopped:bounced": by_prospect["bounce"],
        "stopped:unsubscribed": by_prospect["unsubscribe"],
        "paused": by_prospect["out_of_office"],
    }
    wrong = {k: (states.get(k, 0), n) for k, n in expected.items() if states.get(k, 0) != n}
    if wrong:
        raise SystemExit(f"enrollment states (found, expected) differ: {wrong}; all: {states}")
    kinds = catch_up["kinds"]
    assert isinstance(kinds, dict)
    if kinds.get("reply") != by_prospect["reply"] + other["stranger"] + other["attachment"]:
        raise SystemExit(f"unexpected classification: {kinds}")
    db.close()


if __name__ == "__main__":
    main()
