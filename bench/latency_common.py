"""What the latency benchmarks share: a project wired to loopback servers, `sequencer run` as a
child process, an SMTP server that notes when each message was accepted, the engine as a
library in the benchmark's own process, and read-only looks into the SQLite file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from common import copy_project, percentile
from servers.smtp import RecordingSMTPServer

ANA = "ana.reyes@northwind.example"
SECRET = "bench-secret-0123456789abcdef"
IMAP_PASSWORD_ENV = "BENCH_IMAP_PASSWORD"
SEQUENCER = [sys.executable, "-m", "sequencer"]


class TimedSMTPServer(RecordingSMTPServer):
    """The test suite's recording SMTP server, also noting (time.monotonic, which every process
    on the machine shares) when it accepted the message for each recipient."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accepted: dict[str, float] = {}

    async def on_data(self, server: Any, envelope: Any) -> str:
        reply = await super().on_data(server, envelope)
        now = time.monotonic()
        with self._changed:
            for recipient in envelope.rcpt_tos:
                self.accepted.setdefault(recipient.lower(), now)
        return reply

    def wait_for_recipients(self, recipients: Iterable[str], timeout: float) -> None:
        """Block until every recipient's message was accepted; SystemExit naming the missing."""
        wanted = {r.lower() for r in recipients}
        with self._changed:
            if not self._changed.wait_for(lambda: wanted <= self.accepted.keys(), timeout):
                missing = sorted(wanted - self.accepted.keys())
                raise SystemExit(
                    f"{len(missing)} of {len(wanted)} message(s) never reached the SMTP server "
                    f"within {timeout:g} s (first: {missing[:3]}); see the runner's log above"
                )


def write_project(
    work: Path, smtp_port: int, *, imap: tuple[int, str] | None = None
) -> dict[str, str]:
    """The example project in ``work``, its mailboxes sending to the loopback SMTP server with
    no caps or spacing in the way (a benchmark sends hundreds in a minute), and Ana's inbox on
    the given (port, user) of a loopback IMAP server. Returns the environment to run it with."""
    copy_project(work)
    config = yaml.safe_load((work / "sequencer.yaml").read_text())
    for box in config["mailboxes"]:
        box["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none", "timeout": 5}
        box["daily_cap"] = 1_000_000
        box["min_spacing"] = "0 minutes"
    if imap is not None:
        port, user = imap
        config["mailboxes"][0]["imap"] = {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "username": user,
            "password_env": IMAP_PASSWORD_ENV,
            "timeout": 10,
        }
    config.setdefault("sending", {})["company_daily_limit"] = None
    (work / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    env.update(
        NO_COLOR="1",
        SEQUENCER_DATABASE_URL=database_url(work),
        SEQUENCER_SECRET=SECRET,
    )
    subprocess.run(
        [*SEQUENCER, "db", "upgrade"], cwd=work, env=env, check=True, capture_output=True
    )
    return env


def run_to_file(
    args: list[str], env: dict[str, str], cwd: Path, out: Path
) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB, stdout) of one child process whose output goes to a file
    (common.run_measured reads it through a pipe only at the end: a child writing more than
    the pipe holds would wait forever); exits naming the command if it fails."""
    start = time.perf_counter()
    with out.open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
        process = subprocess.Popen(args, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        err = out.with_suffix(".err").read_text(errors="replace")
        raise SystemExit(f"{' '.join(args)} failed:\n{err[-3000:]}")
    return elapsed, usage.ru_maxrss // 1024, out.read_text()


def database_url(work: Path) -> str:
    return f"sqlite+aiosqlite:///{work / 'sequencer.db'}"


class Runner:
    """`sequencer run` in the project, as a user starts it; its log goes to a file."""

    def __init__(self, work: Path, env: dict[str, str], name: str = "run") -> None:
        self.log = work / f"{name}.log"
        self._handle = self.log.open("w")
        self.process = subprocess.Popen(
            [*SEQUENCER, "run"],
            cwd=work,
            env=env,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            if self.process.poll() is not None:
                raise SystemExit(f"`sequencer run` exited early:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"`sequencer run` never logged {text!r} in {timeout:g} s")
            time.sleep(0.05)

    def stop(self) -> str:
        """SIGTERM, as a user stops it; its log, with SystemExit if it failed or crashed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._handle.close()
        text = self.log.read_text()
        if self.process.returncode != 0 or "Traceback" in text:
            raise SystemExit(
                f"`sequencer run` failed (exit {self.process.returncode}):\n{text[-3000:]}"
            )
        return text


@asynccontextmanager
async def library_engine(work: Path) -> AsyncIterator[Any]:
    """The engine as a library in this process, on the project's database (as an application
    that enrolls leads from its own web form would use it)."""
    from sequencer.catalog import Project, load_catalog
    from sequencer.runtime.clock import SystemClock
    from sequencer.runtime.engine import Engine
    from sequencer.store.database import open_database

    database = await open_database(database_url(work))
    try:
        engine = Engine(database, load_catalog(Project.discover(work)), clock=SystemClock())
        await engine.sync_sequences()
        yield engine
    finally:
        await database.close()


def lead(email: str, line: int = 2) -> Any:
    """A prospect row as the CSV reader or an API would produce it."""
    from sequencer.core.prospects import ProspectRow

    local, _, domain = email.partition("@")
    fields = {
        "email": email,
        "first_name": local.split(".")[0].capitalize(),
        "company": domain.split(".")[0].capitalize(),
        "domain": domain,
    }
    return ProspectRow(line=line, email=email, fields=fields)


def read_only(work: Path) -> sqlite3.Connection:
    """A plain read-only connection to the project's SQLite file (WAL: never blocks a writer)."""
    connection = sqlite3.connect(f"file:{work / 'sequencer.db'}?mode=ro", uri=True, timeout=30)
    connection.execute("PRAGMA query_only=ON")
    return connection


def summary(values: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) in seconds."""
    return percentile(values, 0.5), percentile(values, 0.99), max(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"
