"""Scale benchmark: the dispatcher's claim of the due touches, and a worker's peak memory, with
10,000 and with 1,000,000 active enrollments in PostgreSQL, a few hundred of them due.

How the data is made, in a throwaway PostgreSQL (the test suite's PostgresServer) per size:
1. `sequencer db upgrade`, then `sequencer enroll bench due.csv` enrolls the due prospects
   (300 by default) through the engine itself: their first email is due now.
2. The rest are bulk-loaded with one `INSERT ... SELECT generate_series` per table, shaped like
   what the engine leaves after an enrollment's first email went out: a prospect, an active
   enrollment with its thread, the first touch `sent` (Message-ID, attempt 1), the second
   touch `scheduled` three days after that send (the first went out 1 to 3 days ago, so the
   second is due 2 hours to 2 days from now: none due now, however long the load takes), and
   the `enrolled` and `sent` events. Message-IDs have the engine's form but are not
   signed (those emails are never sent again).
3. The shape is verified, not assumed: after the worker has sent the due prospects' first
   emails, their rows (made by the engine) and a sample of the bulk rows must have the same
   columns filled, the same states, steps, templates and JSON keys, and every enrollment of
   both kinds must pass the same consistency checks (thread = first Message-ID, second touch
   due three days after the first went out, two events).

What is measured:
- claim: `sequencer.store.touches.claim_due` (the dispatcher's claim, batches of 50) run until
  nothing is due, in a transaction rolled back afterwards; median of the repetitions. Ratio
  1M/10k (target at most 1.5).
- RSS: peak resident memory of a real `sequencer worker` (arq on a throwaway Redis) that starts
  (schema check, sync_sequences), takes the dispatcher lease, does its housekeeping, claims,
  enqueues and sends the due emails to an in-process aiosmtpd server, then exits on SIGTERM
  (target under 200 MB at 1M; the 10k run is the baseline).
- plans: every SQL statement the claim and the start-up work (sync_sequences, housekeeping:
  resume_due, expire_tasks, stale-touch recovery, unknown re-check, next_due_at) send is
  captured and run again under EXPLAIN (ANALYZE) at the largest size; a sequential scan of a
  table that grows with enrollments is reported and fails the run.

Usage: .venv/bin/python bench/scale_bench.py [--sizes 10000 1000000] [--due 300] [--repeat 7]
Appends the figures to bench/RESULTS.md (not with --no-record).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

from common import heading, machine, record
from scale_data import OWNER, SEQUENCE, bulk_load, check_shape, cli, make_project, write_due_csv
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.catalog import Project, load_catalog
from sequencer.runtime.clock import SystemClock
from sequencer.runtime.dispatcher import Dispatcher
from sequencer.runtime.engine import Engine
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Sender
from sequencer.settings import Settings
from sequencer.store import touches as tq
from sequencer.store.database import Database

SECRET = "scale-bench-secret-0123456789abcdef"
BATCH = 50  # the dispatcher's default claim batch
#: Tables whose size grows with the number of enrollments: a sequential scan of one of them
#: in the dispatcher's regular work is what makes it slow down at scale.
BIG_TABLES = {"prospects", "enrollments", "touches", "events", "tasks", "prospect_aliases"}
SEND_TIMEOUT = 300.0
RSS_TARGET_MB = 200
RATIO_TARGET = 1.5

# --- the claim --------------------------------------------------------------------------------


async def time_claims(url: str, repeat: int) -> tuple[list[float], list[float], int]:
    """(seconds to claim everything due, per repetition; seconds per claim batch; touches
    claimed per repetition). Each repetition is rolled back, so each finds the same work."""
    database = Database(url)
    totals: list[float] = []
    batches: list[float] = []
    claimed = 0
    try:
        for _ in range(repeat + 1):  # the first warms the caches and is not counted
            async with database.sessions() as s:
                await s.begin()
                now = datetime.now(UTC)
                ids: list[int] = []
                times: list[float] = []
                started = time.perf_counter()
                while True:
                    batch_started = time.perf_counter()
                    found = await tq.claim_due(s, now, BATCH)
                    times.append(time.perf_counter() - batch_started)
                    ids += found
                    if len(found) < BATCH:
                        break
                elapsed = time.perf_counter() - started
                await s.rollback()
            if claimed and len(ids) != claimed:
                raise SystemExit(f"claims differ between repetitions: {claimed} then {len(ids)}")
            if claimed:
                totals.append(elapsed)
                batches += times
            claimed = len(ids)
    finally:
        await database.close()
    return totals, batches, claimed


# --- the plans --------------------------------------------------------------------------------


@dataclass
class Captured:
    statements: list[tuple[str, Any]] = field(default_factory=list)


@contextmanager
def capture(database: Database) -> Iterator[Captured]:
    """Record the SQL statements (and parameters) the database is sent inside the block."""
    found = Captured()

    def listener(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        found.statements.append((statement, parameters))

    event.listen(database.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield found
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", listener)


@dataclass
class Plan:
    work: str
    statement: str
    milliseconds: float
    indexes: list[str]
    scans: list[str]  # sequential scans of big tables


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


async def empty_tables(database: Database) -> set[str]:
    """Big tables with no rows in this data (the planner rightly scans an empty table)."""
    empty: set[str] = set()
    async with database.engine.connect() as conn:
        for table in sorted(BIG_TABLES):
            found = await conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {table})"))
            if not found.scalar_one():
                empty.add(table)
    return empty


async def explain(database: Database, work: str, statements: list[tuple[str, Any]]) -> list[Plan]:
    """Run each captured SELECT/UPDATE again under EXPLAIN (ANALYZE), rolled back."""
    plans: list[Plan] = []
    seen: set[str] = set()
    empty = await empty_tables(database)
    for statement, parameters in statements:
        head = statement.lstrip().split(None, 1)[0].upper()
        if head not in {"SELECT", "UPDATE", "DELETE"} or statement in seen:
            continue
        seen.add(statement)
        async with database.engine.connect() as conn:
            transaction = await conn.begin()
            result = await conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
            )
            document = result.scalar_one()
            await transaction.rollback()
        top = (json.loads(document) if isinstance(document, str) else document)[0]
        nodes = list(walk(top["Plan"]))
        plans.append(
            Plan(
                work=work,
                statement=" ".join(statement.split()),
                milliseconds=top.get("Execution Time", 0.0),
                indexes=sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
                scans=sorted(
                    {
                        n["Relation Name"]
                        for n in nodes
                        if n["Node Type"] == "Seq Scan"
                        and n.get("Relation Name") in BIG_TABLES - empty
                    }
                ),
            )
        )
    return plans


async def plans_of_dispatcher_work(url: str, root: Path) -> list[Plan]:
    """Capture what the claim and a worker's start-up and housekeeping send, and explain it."""
    database = Database(url)
    settings = Settings(database_url=url, secret=SECRET.encode())
    catalog = load_catalog(Project.discover(root))
    engine = Engine(database, catalog, clock=SystemClock(), settings=settings)
    sender = Sender(engine, Mailboxes(catalog.config), secret=SECRET.encode())

    async def hand_out(touch_id: int) -> bool:
        return True

    dispatcher = Dispatcher(engine, hand_out, sender=sender)
    plans: list[Plan] = []
    try:
        work: list[tuple[str, Callable[[], Any]]] = [
            ("start-up: sync_sequences", engine.sync_sequences),
            ("housekeeping", dispatcher.housekeeping),
            ("next_due_at", dispatcher.next_wait),
        ]
        for name, call in work:
            with capture(database) as captured:
                await call()
            plans += await explain(database, name, captured.statements)
        with capture(database) as captured:
            async with database.sessions() as s:
                await s.begin()
                await claim_all(s)
                await s.rollback()
        plans += await explain(database, "claim_due", captured.statements)
    finally:
        await database.close()
    return plans


async def claim_all(s: AsyncSession) -> int:
    now = datetime.now(UTC)
    total = 0
    while True:
        found = await tq.claim_due(s, now, BATCH)
        total += len(found)
        if len(found) < BATCH:
            return total


# --- the worker -------------------------------------------------------------------------------


async def count_sent(url: str) -> int:
    database = Database(url)
    try:
        async with database.engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM touches t JOIN prospects p ON p.id = t.prospect_id "
                            "WHERE p.email LIKE 'due%' AND t.state = 'sent'"
                        )
                    )
                ).scalar_one()
            )
    finally:
        await database.close()


def run_worker(env: dict[str, str], root: Path, url: str, due: int, log: Path) -> tuple[float, int]:
    """Start `sequencer worker`, wait until the due emails are sent, SIGTERM it; returns
    (seconds from start to the last send seen, peak RSS in MiB)."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "sequencer", "worker"],
            env=env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    started = time.perf_counter()
    try:
        while True:
            sent = asyncio.run(count_sent(url))
            if sent >= due:
                break
            if process.poll() is not None:
                raise SystemExit(f"sequencer worker exited early:\n{log.read_text()[-3000:]}")
            if time.perf_counter() - started > SEND_TIMEOUT:
                raise SystemExit(
                    f"only {sent} of {due} sent after {SEND_TIMEOUT:.0f} s:\n"
                    f"{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        process.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if process.returncode is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise SystemExit(
            f"sequencer worker exited {process.returncode} on SIGTERM:\n{log.read_text()[-3000:]}"
        )
    return elapsed, usage.ru_maxrss // 1024


# --- the run --------------------------------------------------------------------------------


@dataclass
class SizeResult:
    size: int
    url: str
    env: dict[str, str]
    load_seconds: float = 0.0
    claim_seconds: list[float] = field(default_factory=list)
    batch_seconds: list[float] = field(default_factory=list)
    claimed: int = 0
    send_seconds: float = 0.0
    rss_mb: int = 0
    received: int = 0
    shape_problems: list[str] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)


def prepare(server: Any, redis_url: str, root: Path, size: int, due: int) -> SizeResult:
    """A database with ``due`` enrollments made by `sequencer enroll` and the rest bulk-loaded."""
    name = f"scale_{size}"
    server.create_database(name)
    url = server.url(name)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")},
        "SEQUENCER_DATABASE_URL": url,
        "SEQUENCER_SECRET": SECRET,
        "SEQUENCER_REDIS_URL": redis_url,
        "NO_COLOR": "1",
    }
    cli(["db", "upgrade"], env, root)
    csv_path = root / "due.csv"
    write_due_csv(csv_path, due)
    cli(["enroll", SEQUENCE, str(csv_path), "--owner", OWNER], env, root)
    print(f"  {size:,}: enrolled {due} due through `sequencer enroll`; bulk-loading the rest")
    result = SizeResult(size, url, env)
    result.load_seconds = asyncio.run(bulk_load(url, size - due))
    server.psql("VACUUM ANALYZE", name)
    print(f"  {size:,}: loaded in {result.load_seconds:.0f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 1_000_000])
    parser.add_argument("--due", type=int, default=300, help="Enrollments due now.")
    parser.add_argument("--repeat", type=int, default=15, help="Claim repetitions per size.")
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    small, large = sorted(args.sizes)
    if small <= args.due:
        raise SystemExit(f"--sizes: each size must be larger than --due ({args.due})")

    from servers.postgres import PostgresServer
    from servers.redis import RedisServer
    from servers.smtp import RecordingSMTPServer

    with (
        tempfile.TemporaryDirectory() as tmp,
        PostgresServer() as server,
        RedisServer() as redis,
        RecordingSMTPServer() as smtp,
    ):
        root = make_project(Path(tmp) / "project", smtp.port)
        results = [prepare(server, redis.url, root, size, args.due) for size in (small, large)]
        # The repetitions alternate between the sizes, so a change in the machine's load
        # (it is shared) weighs on both alike.
        print(f"timing the claim, {args.repeat} repetitions per size")
        for rep in range(args.repeat + 1):  # the first warms the caches and is not counted
            for r in results:
                totals, batches, claimed = asyncio.run(time_claims(r.url, 1))
                if claimed != args.due:
                    raise SystemExit(f"the claim found {claimed} due touches, not {args.due}")
                if rep:
                    r.claim_seconds += totals
                    r.batch_seconds += batches
                    r.claimed = claimed
        for r in results:
            r.plans = asyncio.run(plans_of_dispatcher_work(r.url, root))
            redis.flush()
            before = len(smtp.messages)
            print(f"  {r.size:,}: claim median {median(r.claim_seconds) * 1000:.1f} ms; worker")
            log = root / f"worker-{r.size}.log"
            r.send_seconds, r.rss_mb = run_worker(r.env, root, r.url, args.due, log)
            r.received = len(smtp.messages) - before
            r.shape_problems = asyncio.run(check_shape(r.url, args.due))
    report(results, args.due, args.repeat, not args.no_record)


def report(results: list[SizeResult], due: int, repeat: int, enabled: bool) -> None:
    small, large = results
    ratio = median(large.claim_seconds) / median(small.claim_seconds)
    rss_ratio = large.rss_mb / small.rss_mb
    big_plans = large.plans
    scans = [p for p in big_plans if p.scans]
    lines = [
        heading(f"Scale, {small.size:,} vs {large.size:,} active enrollments, PostgreSQL"),
        "",
        f"Machine: {machine()}",
        "",
        f"{due} enrollments due now (made by `sequencer enroll`), the rest bulk-loaded in the "
        f"engine's shape (first email sent 1-3 days ago, second due in 2 h to 2 days). Claim = `claim_due` in "
        f"batches of {BATCH} until nothing is due, median of {repeat}, rolled back each time.",
        "",
        "| active enrollments | bulk load s | claim all due, median ms | per batch, median ms "
        "| claimed | worker: start to last send s | worker peak RSS MiB | received |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.size:,} | {r.load_seconds:.0f} | {median(r.claim_seconds) * 1000:.1f} "
            f"| {median(r.batch_seconds) * 1000:.2f} | {r.claimed} | {r.send_seconds:.1f} "
            f"| {r.rss_mb} | {r.received} |"
        )
    lines += [
        "",
        f"Claim-time ratio {large.size:,}/{small.size:,}: {ratio:.2f}x (target <= {RATIO_TARGET}). "
        f"Worker RSS at {large.size:,}: {large.rss_mb} MiB (target < {RSS_TARGET_MB}); "
        f"ratio to {small.size:,}: {rss_ratio:.2f}x.",
        "",
        "Shape check (engine-made rows vs bulk rows): "
        + ("same shape." if not (small.shape_problems or large.shape_problems) else "DIFFERENT: ")
        + "; ".join(small.shape_problems + large.shape_problems),
        "",
        f"Plans at {large.size:,} (EXPLAIN ANALYZE of every statement captured; "
        f"{len(scans)} with a sequential scan of a big table):",
        "",
        "| work | statement | ms | indexes used | seq scans |",
        "|---|---|---:|---|---|",
    ]
    for p in big_plans:
        short = p.statement if len(p.statement) <= 90 else p.statement[:87] + "..."
        short = short.replace("|", "\\|")
        lines.append(
            f"| {p.work} | `{short}` | {p.milliseconds:.2f} | {', '.join(p.indexes) or '-'} "
            f"| {', '.join(p.scans) or '-'} |"
        )
    lines.append("")
    record("\n".join(lines), enabled=enabled)
    failed = []
    if ratio > RATIO_TARGET:
        failed.append(f"claim-time ratio {ratio:.2f} over {RATIO_TARGET}")
    if large.rss_mb >= RSS_TARGET_MB:
        failed.append(f"worker RSS {large.rss_mb} MiB not under {RSS_TARGET_MB}")
    if scans:
        failed.append(f"{len(scans)} statements scan a big table sequentially")
    if small.shape_problems or large.shape_problems:
        failed.append("bulk rows are not shaped like the engine's")
    if any(r.received != due for r in results):
        failed.append("the sink did not receive every due email exactly")
    if failed:
        raise SystemExit("Targets missed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
