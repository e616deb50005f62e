"""Housekeeping puts back touches claimed long ago and never sent, but never one that a worker is
sending at that very moment: with arq, a job can wait in Redis longer than stale_after, and on
PostgreSQL an unconditional update would turn the worker's `sent` back into `scheduled`, ready
to go out a second time."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from helpers import (
    enroll_rows,
    make_project,
    move_to,
    one_email_sequence,
    people,
    running_engine,
)

from sequencer.core.states import TouchState
from sequencer.runtime.dispatcher import Dispatcher
from sequencer.store import touches as tq

ONE_EMAIL = one_email_sequence("cold-intro")


async def test_a_touch_sent_while_housekeeping_runs_stays_sent(
    database_url: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, {"one": ONE_EMAIL}, examples=False)
    async with running_engine(database_url, project) as engine:
        await enroll_rows(engine, "one", people("dana@globex.example"))
        async with engine.db.transaction() as s:
            [touch_id] = await tq.claim_due(s, engine.now(), 10)
        # The job waited in the queue past stale_after; now a worker sends it...
        move_to(engine, engine.now() + timedelta(minutes=10))
        dispatcher = Dispatcher(
            engine, lambda _: asyncio.sleep(0), stale_after=timedelta(minutes=5)
        )
        async with engine.db.transaction() as s:
            await tq.set_touch_state(s, [touch_id], TouchState.SENT, engine.now(), completed=True)
            # ...while housekeeping finds it `queued` and stale, and waits for its row.
            sweep = asyncio.create_task(dispatcher.housekeeping())
            await asyncio.sleep(0.5)
        await asyncio.wait_for(sweep, 30)
        async with engine.db.transaction() as s:
            touch = await tq.get_touch(s, touch_id)
    assert touch is not None
    assert touch.state == TouchState.SENT.value
