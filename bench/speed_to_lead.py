"""Speed-to-lead benchmark: leads enrolled into an `immediately` sequence while `sequencer run`
is up; time from the enrollment call to the SMTP server accepting the first email; p50, p99.
Target: p99 under 1 second.

`sequencer run` runs as a child process on a SQLite file, as a single rep runs it; this process
enrolls one lead at a time into the example `inbound-demo-request` sequence through the
library (as a web form handler would), at random (exponential) intervals averaging
``--interval`` seconds, and a recording SMTP server on loopback notes when it accepted each
email. The clock is time.monotonic, shared by both processes.

Baselines in the same run (the floor: what the same SMTP server takes for the same bytes):
- plain aiosmtplib, one open connection: each recorded email sent again with send_message on a
  connection kept open, as the engine's pooled connection does;
- plain aiosmtplib.send: a fresh connection for each email, as a one-off script would;
- and, printed for reference, the dispatcher's idle poll interval: a lead enrolled by another
  process is found by polling, so it waits up to that long.

Usage: .venv/bin/python bench/speed_to_lead.py [--leads 200] [--interval 0.1]
Appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import aiosmtplib
from common import heading, machine, record
from latency_common import (
    ANA,
    Runner,
    TimedSMTPServer,
    lead,
    library_engine,
    ms,
    summary,
    write_project,
)

SEQUENCE = "inbound-demo-request"
TARGET_P99 = 1.0


async def enroll_leads(
    work: Path, emails: list[str], interval: float, seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Enroll each lead at its arrival time; (call started, call returned) per email."""
    from sequencer.runtime.enrollment import enroll

    rng = random.Random(seed)
    started: dict[str, float] = {}
    returned: dict[str, float] = {}
    async with library_engine(work) as engine:
        due = time.monotonic()
        for email in emails:
            due += rng.expovariate(1 / interval) if interval > 0 else 0.0
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            started[email] = time.monotonic()
            report = await enroll(engine, SEQUENCE, [lead(email)], owner=ANA)
            returned[email] = time.monotonic()
            if report.enrolled != 1:
                raise SystemExit(f"{email} was not enrolled: {report.skipped}")
    return started, returned


async def floor(
    smtp: TimedSMTPServer, messages: list[tuple[str, bytes]], *, reuse: bool
) -> list[float]:
    """Send each (sender, raw email) with plain aiosmtplib to a fresh recipient; seconds from
    the call to the server's acceptance, per email."""
    tag = "pooled" if reuse else "fresh"
    latencies: list[float] = []
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port, start_tls=False)
    if reuse:
        await client.connect()
    try:
        for index, (sender, raw) in enumerate(messages):
            recipient = f"floor-{tag}-{index}@example.net"
            started = time.monotonic()
            if reuse:
                await client.sendmail(sender, [recipient], raw)
            else:
                await aiosmtplib.send(
                    raw,
                    sender=sender,
                    recipients=[recipient],
                    hostname="127.0.0.1",
                    port=smtp.port,
                    start_tls=False,
                )
            latencies.append(smtp.accepted[recipient] - started)
    finally:
        if reuse:
            await client.quit()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.1, help="mean seconds between leads")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    from sequencer.runtime.dispatcher import Dispatcher

    poll = Dispatcher.__init__.__kwdefaults__["poll"]
    emails = [f"lead{i}@company{i}.example" for i in range(args.leads)]
    with tempfile.TemporaryDirectory() as tmp, TimedSMTPServer() as smtp:
        work = Path(tmp)
        env = write_project(work, smtp.port)
        runner = Runner(work, env)
        try:
            runner.wait_for_log("dispatcher lease taken")
            time.sleep(1.0)  # up and idle, as it is when a lead comes in
            started, returned = asyncio.run(enroll_leads(work, emails, args.interval, args.seed))
            smtp.wait_for_recipients(emails, timeout=60)
        finally:
            log = runner.stop()
        accepted = dict(smtp.accepted)
        sent = [(m.mail_from, m.raw) for m in smtp.messages]
        engine = [accepted[e] - started[e] for e in emails]
        enroll_call = [returned[e] - started[e] for e in emails]
        after_commit = [accepted[e] - returned[e] for e in emails]
        pooled = asyncio.run(floor(smtp, sent, reuse=True))
        fresh = asyncio.run(floor(smtp, sent, reuse=False))

    if len(sent) != args.leads:
        raise SystemExit(f"expected {args.leads} emails, the SMTP server got {len(sent)}")
    rows = [
        ("sequencer run: enroll call -> SMTP accepted", engine),
        ("  of which: the enroll call (commit)", enroll_call),
        ("  of which: commit -> SMTP accepted", after_commit),
        ("baseline: aiosmtplib, one open connection", pooled),
        ("baseline: aiosmtplib.send, fresh connection", fresh),
    ]
    p50, p99, _ = summary(engine)
    verdict = "met" if p99 < TARGET_P99 else "MISSED"
    lines = [
        heading(f"Speed to lead, {args.leads} leads, sqlite"),
        "",
        f"Machine: {machine()}",
        "",
        f"`sequencer run` up and idle; one lead every {args.interval:g} s on average "
        f"(exponential, seed {args.seed}) enrolled into `{SEQUENCE}` through the library "
        "from another process; time until the recording SMTP server accepted the email.",
        "",
        "| run | p50 | p99 | max |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {' | '.join(ms(v) for v in summary(values))} |" for name, values in rows),
        "",
        f"Ratio p99 engine / p99 floor (one open connection): "
        f"{p99 / summary(pooled)[1]:.1f}x; / p99 fresh connection: "
        f"{p99 / summary(fresh)[1]:.1f}x. Dispatcher idle poll interval: {ms(poll)} "
        "(a lead enrolled by another process waits up to that long to be claimed). "
        f"Target p99 < {TARGET_P99:g} s: {verdict} (p50 {ms(p50)}, p99 {ms(p99)}).",
        "",
    ]
    if "ERROR" in log:
        lines += ["Errors in the runner's log:", "", "```", log[-2000:], "```", ""]
    record("\n".join(lines), enabled=not args.no_record)


if __name__ == "__main__":
    main()
