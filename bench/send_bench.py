"""Send-throughput benchmark: N one-step touches due now, sent into Postfix's smtp-sink.

Engine runs:
- embedded: `sequencer run` on SQLite, one process;
- scaled: 2 `sequencer worker` processes on PostgreSQL + Redis.
Each is timed from the start of the process(es) until the database says every touch is sent
(enrollment is done before and not counted); the sink's count of accepted messages must agree.

Baselines in the same run, over the same number of SMTP connections as the engine has
(mailboxes x pool size, per process):
- plain loop: aiosmtplib sending pre-built messages, one task per connection (the target is
  the engine at 0.8x of it or better);
- ceiling: Postfix's smtp-source with as many sessions.

Usage: .venv/bin/python bench/send_bench.py [--count 20000] [--mode embedded|scaled|both]
       [--no-record]
Appends the figures to bench/RESULTS.md (unless --no-record). Needs the Debian packages
postfix (smtp-sink, smtp-source), and for scaled mode postgresql and redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import aiosmtplib
import yaml
from common import REPO, heading, machine, record
from sink import Sink
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

SEQUENCE = "bench-send"
TEMPLATE = "bench-note"
OWNER = "ana.reyes@northwind.example"
OTHER = "marcus.oyelaran@northwind.example"
MAILBOXES = (OWNER, OTHER)
#: SMTP connections each mailbox keeps open per process (SmtpSettings.pool_size).
POOL_SIZE = 2
SECRET = "send-bench-secret-0123456789abcdef"
#: One immediate email, spread over both mailboxes, that no window, cap or gap holds back.
SEQUENCE_YAML = f"""\
description: One immediate email, for the send benchmark.
schedule:
  timezone: UTC
  days: every day
  hours: "00:00-23:59"
limits:
  min_gap: none
  max_per_week: none
mailbox: [{OWNER}, {OTHER}]
steps:
  - id: hello
    delay: immediately
    anytime: true
    email: {TEMPLATE}
"""
NOTE = """\
---
subject: "A note for {{ prospect.first_name | default('you') }} at {{ prospect.company }}"
---
Hi {{ prospect.first_name | default("there") }},

We help freight teams at companies like {{ prospect.company }} cut dwell time. One short
note, sent once and only once.

{{ sender.signature }}

{{ footer }}
"""
SMTP_SOURCE = "/usr/sbin/smtp-source"
#: Give up on a run that has not finished in this long (seconds).
RUN_TIMEOUT = 1800.0


# --- the project ---------------------------------------------------------------------------


def write_project(work: Path, sink_port: int) -> None:
    """sequencer.yaml (the example's mailboxes, pointed at the sink, no caps or spacing), one
    sequence and one template."""
    work.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "sequencer.yaml").read_text())
    for box in config["mailboxes"]:
        box["smtp"] = {"host": "127.0.0.1", "port": sink_port, "security": "none", "timeout": 30}
        box["daily_cap"] = 1_000_000
        box["min_spacing"] = "0 minutes"
    config["sending"] = {"company_daily_limit": "none"}
    (work / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (work / "sequences").mkdir(exist_ok=True)
    (work / "sequences" / f"{SEQUENCE}.yaml").write_text(SEQUENCE_YAML)
    (work / "templates").mkdir(exist_ok=True)
    (work / "templates" / f"{TEMPLATE}.j2").write_text(NOTE)


def write_csv(path: Path, count: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email", "First Name", "Last Name", "Company", "Time Zone"])
        for i in range(count):
            writer.writerow(
                [f"person{i}@company{i % 997}.example", f"First{i}", f"Last{i}", f"Co {i}", "UTC"]
            )


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    env.update(
        SEQUENCER_DATABASE_URL=database_url,
        SEQUENCER_SECRET=SECRET,
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
        **extra,
    )
    return env


def sequencer(*args: str) -> list[str]:
    return [sys.executable, "-m", "sequencer", *args]


def prepare(work: Path, count: int, sink_port: int, database_url: str) -> None:
    """Project, schema and ``count`` enrolled prospects, each with one touch due now."""
    write_project(work, sink_port)
    people = work / "people.csv"
    write_csv(people, count)
    env = cli_env(database_url)
    for args in (("db", "upgrade"), ("enroll", SEQUENCE, str(people), "--owner", OWNER)):
        done = subprocess.run(sequencer(*args), cwd=work, env=env, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"sequencer {' '.join(args)} failed:\n{done.stderr.decode()}")


# --- watching a run ------------------------------------------------------------------------


async def wait_all_sent(
    database_url: str,
    count: int,
    processes: list[subprocess.Popen[bytes]],
    logs: list[Path],
    sample: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Poll the database until ``count`` touches are sent; fails if a process exits or a
    touch ends any other way."""
    deadline = time.monotonic() + RUN_TIMEOUT
    engine = create_async_engine(database_url)
    try:
        while True:
            if sample is not None:
                sample()
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text("SELECT state, count(*) FROM touches GROUP BY state")
                )
                states = {state: n for state, n in rows.all()}
            if states.get("sent", 0) >= count:
                return states
            bad = {s: n for s, n in states.items() if s in ("failed", "unknown", "cancelled")}
            for process, log in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    raise SystemExit(f"{process.args!r} exited early:\n{tail(log)}")
            if bad:
                raise SystemExit(f"touches ended badly: {states}\n{tail(logs[0])}")
            if time.monotonic() > deadline:
                raise SystemExit(f"not all sent after {RUN_TIMEOUT:.0f} s: {states}")
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


def start(args: list[str], work: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            args, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM and wait; a process that does not exit cleanly fails the benchmark."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise SystemExit(f"{process.args!r} did not stop within 60 s of SIGTERM") from None
    if process.returncode != 0:
        raise SystemExit(f"{process.args!r} exited with {process.returncode}:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


# --- baselines -----------------------------------------------------------------------------


def prebuilt_messages(count: int) -> list[tuple[str, str, bytes]]:
    """(sender, recipient, message) like the engine's: one short plain-text note each, with
    the same headers a sequenced email carries (Message-ID, List-Unsubscribe, ...)."""
    messages = []
    for i in range(count):
        sender = MAILBOXES[i % len(MAILBOXES)]
        recipient = f"person{i}@company{i % 997}.example"
        message = EmailMessage()
        message["From"] = f"Ana Reyes <{sender}>"
        message["To"] = f"First{i} Last{i} <{recipient}>"
        message["Subject"] = f"A note for First{i} at Co {i}"
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = f"<s{i}.hello.0123456789@northwind.example>"
        message["List-Unsubscribe"] = f"<https://sequencer.northwind.example/u/{i:032x}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(
            f"Hi First{i},\n\nWe help freight teams at companies like Co {i} cut dwell time. "
            "One short\nnote, sent once and only once.\n\nAna Reyes\nAccount Executive, "
            "Northwind Analytics\n+1 415 555 0134\n\n--\nNorthwind Analytics, 500 Howard St, "
            "Suite 300, San Francisco, CA 94105, USA\nUnsubscribe: https://sequencer.northwind"
            f".example/u/{i:032x}\n"
        )
        messages.append((sender, recipient, message.as_bytes()))
    return messages


async def _plain_loop(
    messages: list[tuple[str, str, bytes]], sink_port: int, connections: int
) -> float:
    pending = iter(messages)

    async def one_connection() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink_port, timeout=30)
        await smtp.connect()
        try:
            for sender, recipient, message in pending:
                await smtp.sendmail(sender, [recipient], message)
        finally:
            await smtp.quit()

    began = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return time.perf_counter() - began


def plain_loop(count: int, sink_port: int, connections: int) -> float:
    """Seconds for a plain aiosmtplib loop to send ``count`` pre-built messages over
    ``connections`` connections (connecting included, building the messages not)."""
    messages = prebuilt_messages(count)
    return asyncio.run(_plain_loop(messages, sink_port, connections))


def smtp_source(count: int, sink_port: int, sessions: int, work: Path) -> float:
    """Seconds for Postfix's smtp-source to send ``count`` copies of one pre-built message
    over ``sessions`` parallel sessions, each kept open for the next message (-d)."""
    sample = work / "sample.eml"
    sample.write_bytes(prebuilt_messages(1)[0][2].replace(b"\r\n", b"\n"))
    args = [
        SMTP_SOURCE,
        "-d",
        "-s",
        str(sessions),
        "-m",
        str(count),
        "-F",
        str(sample),
        "-f",
        OWNER,
        "-t",
        "person@company.example",
        f"127.0.0.1:{sink_port}",
    ]
    began = time.perf_counter()
    done = subprocess.run(args, capture_output=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"smtp-source failed: {done.stderr.decode(errors='replace')}")
    return seconds


# --- the engine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRun:
    seconds: float  # from the start of the process(es) until every touch is sent
    startup: float  # from the start until the sink took the first message
    accepted: int  # messages the sink accepted meanwhile


def engine_embedded(count: int, sink_port: int, work: Path) -> float:
    """Seconds for `sequencer run` on SQLite to send ``count`` one-step immediate touches into
    the SMTP server on 127.0.0.1:``sink_port``, from process start until the database says all
    are sent. ``work`` (created if missing) holds the project, the database and the log;
    preparing them (enrolling) is not timed."""
    return run_embedded(count, sink_port, work, None).seconds


def run_embedded(count: int, sink_port: int, work: Path, sink: Sink | None) -> EngineRun:
    url = f"sqlite+aiosqlite:///{work / 'send.db'}"
    prepare(work, count, sink_port, url)
    log = work / "run.log"
    return timed_run(url, count, sink, [(sequencer("run"), cli_env(url), log)], work)


def run_scaled(count: int, sink: Sink, work: Path, workers: int) -> EngineRun:
    """``workers`` `sequencer worker` processes on a fresh PostgreSQL and Redis."""
    from servers.postgres import PostgresServer
    from servers.redis import RedisServer

    with PostgresServer() as postgres, RedisServer() as redis:
        postgres.create_database("send")
        url = postgres.url("send")
        prepare(work, count, sink.port, url)
        env = cli_env(url, SEQUENCER_REDIS_URL=redis.url)
        commands = [(sequencer("worker"), env, work / f"worker-{i}.log") for i in range(workers)]
        return timed_run(url, count, sink, commands, work)


def timed_run(
    url: str,
    count: int,
    sink: Sink | None,
    commands: list[tuple[list[str], dict[str, str], Path]],
    work: Path,
) -> EngineRun:
    """Start the processes, wait until the database says ``count`` touches are sent, stop
    them (SIGTERM: they must exit 0)."""
    before = sink.count() if sink else 0
    began = time.perf_counter()
    processes = [start(args, work, env, log) for args, env, log in commands]
    logs = [log for _, _, log in commands]
    first: list[float] = []

    def first_send() -> None:
        if not first and sink is not None and sink.count() > before:
            first.append(time.perf_counter() - began)

    try:
        asyncio.run(wait_all_sent(url, count, processes, logs, first_send))
        seconds = time.perf_counter() - began
    finally:
        for process, log in zip(processes, logs, strict=True):
            stop(process, log)
    accepted = (sink.wait_for(before + count, 5.0) - before) if sink else count
    return EngineRun(seconds, first[0] if first else seconds, accepted)


# --- the benchmark -------------------------------------------------------------------------


def measure_mode(mode: str, count: int, workers: int) -> list[str]:
    """Engine, plain loop and smtp-source on one workload; the table rows and the ratio."""
    processes = 1 if mode == "embedded" else workers
    connections = processes * len(MAILBOXES) * POOL_SIZE
    with Sink() as sink, tempfile.TemporaryDirectory(prefix="send-bench-") as tmp:
        work = Path(tmp)
        if mode == "embedded":
            engine = run_embedded(count, sink.port, work / "project", sink)
            label = "sequencer run, SQLite"
        else:
            engine = run_scaled(count, sink, work / "project", workers)
            label = f"{workers} x sequencer worker, PostgreSQL + Redis"
        if engine.accepted != count:
            raise SystemExit(f"{mode}: the sink accepted {engine.accepted} messages, not {count}")
        plain = plain_loop(count, sink.port, connections)
        source = smtp_source(count, sink.port, connections, work)
    engine_rate, plain_rate, source_rate = (count / x for x in (engine.seconds, plain, source))
    return [
        f"| {label} | {connections} | {engine.seconds:.1f} | {engine_rate:,.0f} | "
        f"{engine_rate / plain_rate:.3f}x |",
        f"| baseline: plain aiosmtplib loop, pre-built messages | {connections} | {plain:.1f} | "
        f"{plain_rate:,.0f} | 1.000x |",
        f"| ceiling: Postfix smtp-source | {connections} | {source:.1f} | {source_rate:,.0f} | "
        f"{source_rate / plain_rate:.3f}x |",
        f"<!-- {mode}: first email {engine.startup:.1f} s after start; the sink accepted "
        f"{engine.accepted:,} -->",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000, help="touches to send")
    parser.add_argument("--mode", choices=["embedded", "scaled", "both"], default="both")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (scaled)")
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    modes = ["embedded", "scaled"] if args.mode == "both" else [args.mode]
    rows: list[str] = []
    notes: list[str] = []
    for mode in modes:
        print(f"{mode}: {args.count:,} touches ...", file=sys.stderr)
        *table, note = measure_mode(mode, args.count, args.workers)
        print("\n".join(table), file=sys.stderr)  # kept even if a later mode fails
        rows += table
        notes.append(note.removeprefix("<!-- ").removesuffix(" -->"))
    lines = [
        heading(f"Send throughput, {args.count:,} one-step touches into smtp-sink"),
        "",
        f"Machine: {machine()}",
        "",
        "| run | SMTP connections | seconds | msgs/s | ratio to the plain loop |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        "Engine time: from the start of the process(es) until the database says every touch "
        "is `sent` (enrolling not counted); the sink's count agrees. " + "; ".join(notes) + ".",
        "",
    ]
    record("\n".join(lines), enabled=not args.no_record)


if __name__ == "__main__":
    main()
