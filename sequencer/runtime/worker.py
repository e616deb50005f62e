"""`sequencer worker`: arq workers on Redis. Any number of processes send; the one holding the
dispatcher lease also claims due touches and enqueues them (job id = touch id)."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta
from typing import Any

from arq import func
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker

from sequencer.catalog import Project, load_catalog
from sequencer.runtime.clock import Clock, ManualClock, SystemClock
from sequencer.runtime.dispatcher import Dispatcher
from sequencer.runtime.engine import Engine
from sequencer.runtime.inbox import InboxProcessor
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Sender
from sequencer.runtime.watcher import start_watchers
from sequencer.settings import Settings
from sequencer.store.database import open_database

log = logging.getLogger("sequencer.worker")

#: Longer than an SMTP conversation can take, so SIGTERM never cuts one off.
COMPLETION_WAIT = 90
#: How often an idle worker looks for new jobs. arq's default (0.5 s) capped a worker at one
#: queue read per half second, whatever the backlog; Redis answers a poll in well under 1 ms.
POLL_DELAY = 0.05


def job_id(touch_id: int) -> str:
    """One job per touch: enqueueing it again while it is queued or running does nothing."""
    return f"touch:{touch_id}"


async def send_touch(ctx: dict[str, Any], touch_id: int, mailbox: str | None = None) -> str:
    sender: Sender = ctx["sender"]
    outcome = await sender.send_touch(touch_id, mailbox)
    return outcome.value


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    catalog = load_catalog(Project.discover())
    database = await open_database(settings.database_url)
    clock: Clock = ManualClock(settings.now) if settings.now else SystemClock()
    engine = Engine(database, catalog, clock=clock, settings=settings)
    await engine.sync_sequences()
    assert settings.secret is not None
    mailboxes = Mailboxes(catalog.config)
    ctx.update(
        engine=engine, mailboxes=mailboxes, sender=Sender(engine, mailboxes, secret=settings.secret)
    )
    redis: ArqRedis = ctx["redis"]

    async def enqueue(touch_id: int) -> None:
        mailbox = dispatcher.mailbox_hints.get(touch_id)
        await redis.enqueue_job("send_touch", touch_id, mailbox, _job_id=job_id(touch_id))

    dispatcher = Dispatcher(
        engine,
        enqueue,
        stale_after=timedelta(seconds=settings.stale_after),
        sender=ctx["sender"],
    )
    stop: asyncio.Event = ctx["stop"]
    ctx["dispatcher_task"] = asyncio.create_task(dispatcher.run(stop))
    # Every worker offers to watch every inbox; a lease per mailbox lets exactly one do it.
    ctx["watchers"] = start_watchers(engine, InboxProcessor(engine, secret=settings.secret), stop)


async def shutdown(ctx: dict[str, Any]) -> None:
    ctx["stop"].set()
    tasks = [ctx.get("dispatcher_task"), *ctx.get("watchers", [])]
    await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
    if "mailboxes" in ctx:
        await ctx["mailboxes"].close()
    if "engine" in ctx:
        await ctx["engine"].db.close()


class SequencerWorker(Worker):
    """An arq worker that, on SIGTERM, first stops dispatching, then finishes its sends."""

    def handle_sig_wait_for_completion(self, signum: signal.Signals) -> None:
        stop = self.ctx.get("stop") if self.ctx else None
        if stop is not None:
            stop.set()
        super().handle_sig_wait_for_completion(signum)


def build_worker(settings: Settings, *, burst: bool = False) -> SequencerWorker:
    return SequencerWorker(
        functions=[func(send_touch, name="send_touch", max_tries=1, keep_result=0)],
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"settings": settings, "stop": asyncio.Event()},
        max_jobs=settings.concurrency,
        poll_delay=POLL_DELAY,
        job_timeout=300,
        job_completion_wait=COMPLETION_WAIT,
        handle_signals=True,
        burst=burst,
        keep_result=0,
    )
