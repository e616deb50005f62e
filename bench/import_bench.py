"""Import benchmark: `sequencer enroll` of a large CSV, rows per second and peak memory.

Baselines in the same run:
- throughput: a plain loop that reads the same CSV with the csv module and inserts the same
  prospects and enrollments with sqlite3.executemany, no checks, no planning;
- memory: the engine's own peak RSS on a file a tenth of the size (flat memory means a ratio
  near 1.0).

Usage: .venv/bin/python bench/import_bench.py [--rows 100000] [--backend sqlite|postgresql]
Appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

from common import copy_project, heading, machine, record, run_measured

ZONES = ["America/New_York", "America/Chicago", "Europe/Berlin", "Europe/London", "Asia/Tokyo", ""]


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["Email", "First Name", "Last Name", "Company", "Title", "Time Zone", "Industry"]
        )
        for i in range(rows):
            writer.writerow(
                [
                    f"person{i}@company{i % 5000}.example",
                    f"First{i}",
                    f"Last{i}",
                    f"Company {i % 5000}",
                    "VP Operations",
                    ZONES[i % len(ZONES)],
                    "freight",
                ]
            )


def engine_import(work: Path, csv_path: Path, url: str) -> tuple[float, int]:
    env = {**os.environ, "SEQUENCER_DATABASE_URL": url, "NO_COLOR": "1"}
    sequencer = [sys.executable, "-m", "sequencer"]
    run_measured([*sequencer, "db", "upgrade"], env, work)
    seconds, rss, _ = run_measured(
        [
            *sequencer,
            "enroll",
            "cold-outbound",
            str(csv_path),
            "--owner",
            "ana.reyes@northwind.example",
            "--json",
        ],
        env,
        work,
    )
    return seconds, rss


BASELINE = r"""
import csv, sqlite3, sys, datetime
db = sqlite3.connect(sys.argv[2])
db.execute("PRAGMA journal_mode=WAL")
db.execute("create table p (id integer primary key, email text unique, first text, last text, company text, title text, tz text, fields text)")
db.execute("create table e (id integer primary key, prospect_id int, state text, created text)")
now = datetime.datetime.now(datetime.UTC).isoformat()
with open(sys.argv[1], newline="") as f:
    reader = csv.reader(f)
    next(reader)
    batch = []
    for row in reader:
        batch.append(row)
        if len(batch) == 500:
            with db:
                db.executemany("insert or ignore into p (email, first, last, company, title, tz, fields) values (?,?,?,?,?,?,?)", batch)
                db.executemany("insert into e (prospect_id, state, created) select id, 'active', ? from p where email = ?", [(now, r[0]) for r in batch])
            batch = []
    if batch:
        with db:
            db.executemany("insert or ignore into p (email, first, last, company, title, tz, fields) values (?,?,?,?,?,?,?)", batch)
            db.executemany("insert into e (prospect_id, state, created) select id, 'active', ? from p where email = ?", [(now, r[0]) for r in batch])
"""


def baseline_import(work: Path, csv_path: Path) -> tuple[float, int]:
    script = work / "baseline.py"
    script.write_text(BASELINE)
    seconds, rss, _ = run_measured(
        [sys.executable, str(script), str(csv_path), str(work / "baseline.db")],
        dict(os.environ),
        work,
    )
    return seconds, rss


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    small_rows = max(args.rows // 10, 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_project(work)
        big, small = work / "big.csv", work / "small.csv"
        write_csv(big, args.rows)
        write_csv(small, small_rows)

        server = None
        if args.backend == "postgresql":
            from servers.postgres import PostgresServer

            server = PostgresServer()
            server.start()

        def url(name: str) -> str:
            if server is not None:
                server.create_database(name)
                return server.url(name)
            return f"sqlite+aiosqlite:///{work / (name + '.db')}"

        try:
            small_s, small_rss = engine_import(work, small, url("small"))
            big_s, big_rss = engine_import(work, big, url("big"))
        finally:
            if server is not None:
                server.stop()
        base_s, base_rss = baseline_import(work, big)

    engine_rate = args.rows / big_s
    base_rate = args.rows / base_s
    lines = [
        heading(f"Import, {args.rows:,} rows, {args.backend}"),
        "",
        f"Machine: {machine()}",
        "",
        "| run | rows | seconds | rows/s | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
        f"| sequencer enroll | {args.rows:,} | {big_s:.1f} | {engine_rate:,.0f} | {big_rss} |",
        f"| sequencer enroll | {small_rows:,} | {small_s:.1f} | {small_rows / small_s:,.0f} | {small_rss} |",
        f"| baseline: csv + sqlite3.executemany | {args.rows:,} | {base_s:.1f} | {base_rate:,.0f} | {base_rss} |",
        "",
        f"Throughput ratio engine/baseline: {engine_rate / base_rate:.2f}x. "
        f"Memory ratio {args.rows:,}/{small_rows:,} rows: {big_rss / small_rss:.2f}x (flat = 1.0).",
        "",
    ]
    record("\n".join(lines), enabled=not args.no_record)


if __name__ == "__main__":
    main()
