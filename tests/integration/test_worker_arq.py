"""The scaled shape for real: two `sequencer worker` processes (arq) on PostgreSQL and Redis
send every touch exactly once with one dispatcher at a time; and `sequencer run` stopped by
SIGTERM mid-send finishes what is in flight, starts nothing new and exits 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope
from servers.smtp import RecordingSMTPServer
from sqlalchemy import select
from test_crash import (
    cli_env,
    enroll_prospects,
    one_email_project,
    received_ids,
    start_cli,
    tail,
    touch_rows,
    wait_for_line,
    wait_until_terminal,
)

from sequencer.runtime.dispatcher import LEASE
from sequencer.runtime.worker import COMPLETION_WAIT
from sequencer.store.database import Database
from sequencer.store.models import Lease

WORKER_PROSPECTS = 300
#: Bound on sending everything once the workers run.
SEND_TIMEOUT = 90.0
#: How long the slow server takes to answer the end of DATA (the client waits 5 s).
SLOW_REPLY = 1.0


class SlowSMTPServer(RecordingSMTPServer):
    """Takes its time to accept each message (less than the client's timeout), then keeps it:
    every message is in flight for ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def on_data(self, server: SMTP, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        return await super().on_data(server, envelope)


def pid_of(holder: str) -> int:
    """The process id in a lease holder's name (``host:pid:tag``)."""
    return int(holder.rsplit(":", 2)[1])


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_workers_send_every_touch_once_with_one_dispatcher(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    with RecordingSMTPServer() as smtp:
        root = tmp_path / "project"
        project = one_email_project(root, smtp.port)
        env = cli_env(database_url, SEQUENCER_REDIS_URL=redis_url, SEQUENCER_CONCURRENCY="8")
        logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
        workers = [start_cli(root, env, log, "worker") for log in logs]
        db = Database(database_url)
        holders: Counter[str] = Counter()
        try:
            for worker, log in zip(workers, logs, strict=True):
                wait_for_line(worker, log, "Starting worker")
            # Both workers are up before the touches exist, so both take part.
            await enroll_prospects(database_url, project, WORKER_PROSPECTS)
            enrolled = time.monotonic()

            async def sample_lease() -> None:
                async with db.transaction() as s:
                    rows = (await s.execute(select(Lease).where(Lease.name == LEASE))).scalars()
                    holders.update(row.holder for row in rows)

            rows = await wait_until_terminal(
                db, SEND_TIMEOUT, workers, every=0.1, sample=sample_lease
            )
            sent_in = time.monotonic() - enrolled
        finally:
            await db.close()
            stop_began = time.monotonic()
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            codes = [_wait(worker, COMPLETION_WAIT + 10) for worker in workers]
            stopped_in = time.monotonic() - stop_began
        received = received_ids(smtp)
        messages = len(smtp.messages)
    outputs = [log.read_text(errors="replace") for log in logs]
    jobs = [out.count(":send_touch ●") for out in outputs]
    sends = [out.count(":send_touch ● 'sent'") for out in outputs]
    print(
        f"\ntwo workers: touches={len(rows)} sent={Counter(r.state for r in rows)['sent']} "
        f"received={messages} jobs per worker={jobs} (sent {sends}) lease holders={dict(holders)} "
        f"sent in {sent_in:.1f} s, stopped in {stopped_in:.1f} s, "
        f"total {time.monotonic() - began:.1f} s"
    )

    assert codes == [0, 0], [tail(log) for log in logs]
    assert stopped_in < COMPLETION_WAIT
    assert len(rows) == WORKER_PROSPECTS
    assert {r.state for r in rows} == {"sent"}
    assert messages == WORKER_PROSPECTS
    assert set(received.values()) == {1}
    assert set(received) == {r.message_id for r in rows}
    # One dispatcher the whole time: one holder seen in every sample, and it was one of ours;
    # the other worker only sent.
    assert len(holders) == 1, holders
    (holder,) = holders
    assert pid_of(holder) in {w.pid for w in workers}
    assert [("dispatcher lease taken" in out) for out in outputs].count(True) == 1
    # Both workers sent, and each touch was sent by one job (a job that finds its touch
    # already done reports `skipped` and sends nothing).
    assert all(n > 0 for n in sends), sends
    assert sum(sends) == WORKER_PROSPECTS


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigterm_finishes_sends_in_flight_and_starts_nothing_new(
    database_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    with SlowSMTPServer(SLOW_REPLY) as smtp:
        root = tmp_path / "project"
        project = one_email_project(root, smtp.port, smtp_timeout=5)
        # More touches than one claim batch (50), so claimed-but-unstarted ones exist too.
        await enroll_prospects(database_url, project, 120)
        env = cli_env(database_url, SEQUENCER_CONCURRENCY="8")
        log = tmp_path / "run.log"
        process = start_cli(root, env, log, "run")
        db = Database(database_url)
        try:
            wait_for_line(process, log, "Ctrl-C to stop")
            # Wait until messages are on the wire: some touches in `sending`.
            deadline = time.monotonic() + 30
            while True:
                before = {r.id: r.state for r in await touch_rows(db)}
                if Counter(before.values())["sending"] >= 4:
                    break
                assert process.poll() is None, tail(log)
                assert time.monotonic() < deadline, Counter(before.values())
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = _wait(process, 30)
            stopped_in = time.monotonic() - signalled
            rows = await touch_rows(db)
        finally:
            await db.close()
            if process.poll() is None:
                process.kill()
                process.wait()
        received = received_ids(smtp)
    after = {r.id: r.state for r in rows}
    sending = {i for i, state in before.items() if state == "sending"}
    claimed = {i for i, state in before.items() if state in ("queued", "sending")}
    scheduled = {i for i, state in before.items() if state == "scheduled"}
    newly_sent = {i for i, state in after.items() if state == "sent" and before[i] != "sent"}
    print(
        f"\nSIGTERM [{database_url.split(':')[0]}]: before {dict(Counter(before.values()))}, "
        f"after {dict(Counter(after.values()))}, sent after the signal {len(newly_sent)}, "
        f"stopped in {stopped_in:.1f} s, total {time.monotonic() - began:.1f} s"
    )

    assert code == 0, tail(log)
    assert "Stopped." in log.read_text(errors="replace")
    # Every email on the wire at the signal went out and was recorded: nothing cut off.
    assert all(after[i] == "sent" for i in sending), {i: after[i] for i in sending}
    # Nothing new was claimed, and what was claimed but not started went back to the queue.
    assert all(after[i] == "scheduled" for i in scheduled)
    assert newly_sent <= claimed
    assert not {i for i, state in after.items() if state in ("queued", "sending")}
    # Only the sends already started finished: at most one round per free slot, not a batch.
    assert len(newly_sent) <= 8
    assert stopped_in < 4 * SLOW_REPLY + 5
    # Each email arrived once, and each that arrived is recorded as sent.
    assert set(received.values()) <= {1}
    assert set(received) == {r.message_id for r in rows if r.state == "sent"}


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None
