"""Finds due touches and hands them out: to in-process send tasks (`sequencer run`) or to arq
jobs (`sequencer worker`). One active dispatcher at a time, by a lease in the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sequencer.core.mailbox_config import UnknownOutcome
from sequencer.core.states import TouchState
from sequencer.runtime.engine import Engine
from sequencer.runtime.sender import Outcome, Sender, settle_unknown
from sequencer.store import enrollments as eq
from sequencer.store import mailboxes as mq
from sequencer.store import touches as tq

log = logging.getLogger("sequencer.dispatcher")

LEASE = "dispatcher"


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Stats:
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1


class Dispatcher:
    """Claims due touches and passes them to ``hand_out`` (an in-process send, or an enqueue);
    ``hand_out`` returns False when it takes nothing more because the process is stopping.

    The lease lasts ``lease_ttl``, but never longer than ``stale_after``: a process silent that
    long is presumed gone, for its lease as for its touches (only the lease holder recovers
    touches, so a longer lease would delay recovery past ``stale_after``, and a restarted
    `sequencer run` would wait out its dead predecessor's lease before sending)."""

    def __init__(
        self,
        engine: Engine,
        hand_out: Callable[[int], Awaitable[bool | None]],
        *,
        batch: int = 50,
        poll: float = 0.25,
        lease_ttl: timedelta = timedelta(seconds=30),
        stale_after: timedelta = timedelta(minutes=5),
        housekeeping_every: float = 30.0,
        holder: str | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.hand_out = hand_out
        self.batch = batch
        self.poll = poll
        self.lease_ttl = min(lease_ttl, stale_after)
        self.stale_after = stale_after
        self.housekeeping_every = housekeeping_every
        self.holder = holder or holder_name()
        self.stats = Stats()
        self.wakeup = asyncio.Event()
        self._last_housekeeping = -1e9
        self._leader = False
        #: Touches this process is sending right now: alive, whatever their age.
        self.own: set[int] = set()
        #: The mailbox of each touch being handed out, read with the claim: ``hand_out`` may
        #: pass it on so the sender need not look it up again (valid during hand-out only).
        self.mailbox_hints: dict[int, str] = {}

    async def hold_lease(self) -> bool:
        async with self.engine.db.transaction() as s:
            held = await mq.acquire_lease(s, LEASE, self.holder, self.engine.now(), self.lease_ttl)
        if held and not self._leader:
            log.info("dispatcher lease taken by %s", self.holder)
        self._leader = held
        return held

    async def release(self) -> None:
        async with self.engine.db.transaction() as s:
            await mq.release_lease(s, LEASE, self.holder)
        self._leader = False

    async def tick(self, stop: asyncio.Event | None = None) -> int:
        """One round: housekeeping when due, then claim and hand out what is due. Returns how
        many touches were handed out. Once ``stop`` is set nothing more is handed out, and
        what was claimed but not handed out goes straight back to the queue (rather than
        waiting for another process to judge it stale)."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_housekeeping >= self.housekeeping_every:
            self._last_housekeeping = loop.time()
            await self.housekeeping()
        async with self.engine.db.transaction() as s:
            ids = await tq.claim_due(s, self.engine.now(), self.batch)
            self.mailbox_hints = await tq.mailboxes_of(s, ids)
        self.stats.claimed += len(ids)
        handed = 0
        try:
            for touch_id in ids:
                if (stop is not None and stop.is_set()) or await self.hand_out(touch_id) is False:
                    break
                handed += 1
        finally:
            self.mailbox_hints = {}
        if handed < len(ids):
            async with self.engine.db.transaction() as s:
                await tq.unclaim(s, ids[handed:], self.engine.now())
        return handed

    async def housekeeping(self) -> None:
        """Pauses that ran out end, undone tasks move on, and work a dead process left behind
        is recovered: claimed-but-unsent touches go back to the queue; touches caught in
        `sending` become `unknown` (never silently resent). This process's own sends are
        alive however long they take, so they are left alone."""
        engine = self.engine
        await engine.resume_due()
        await engine.expire_tasks()
        now = engine.now()
        async with engine.db.transaction() as s:
            stuck_queued = await tq.touches_in_state_before(
                s, TouchState.QUEUED, now - self.stale_after
            )
            stuck_queued = [t for t in stuck_queued if t not in self.own]
            # Only those still `queued`: on PostgreSQL a worker may be sending one right now
            # (a job that waited in Redis longer than stale_after), and an unconditional update
            # would turn its `sent` back into `scheduled`, to be sent again.
            await tq.unclaim(s, stuck_queued, now)
            stuck_sending = await tq.touches_in_state_before(
                s, TouchState.SENDING, now - self.stale_after
            )
            stuck_sending = [t for t in stuck_sending if t not in self.own]
        for touch_id in stuck_sending:
            await recover_sending(engine, touch_id)
        if self.sender is not None:
            await self.sender.recheck_unknown()

    async def next_wait(self) -> float:
        """How long to sleep: until the next touch is due, at most ``poll`` seconds."""
        async with self.engine.db.transaction() as s:
            due = await tq.next_due_at(s)
        if due is None:
            return self.poll
        return max(0.0, min(self.poll, (due - self.engine.now()).total_seconds()))

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: hold the lease, tick, sleep until something is due."""
        try:
            while not stop.is_set():
                if not await self.hold_lease():
                    await _sleep(stop, self.lease_ttl.total_seconds() / 3)
                    continue
                handed = await self.tick(stop)
                if handed:
                    continue
                self.wakeup.clear()
                wait = await self.next_wait()
                await _wait_any(stop, self.wakeup, wait)
        finally:
            if self._leader:
                await self.release()


async def recover_sending(engine: Engine, touch_id: int) -> None:
    """A touch left in `sending` by a process that died: the SMTP outcome cannot be known."""
    async with engine.db.transaction() as s:
        now = engine.now()
        touch = await tq.get_touch(s, touch_id, lock=True)
        if touch is None or touch.state != TouchState.SENDING.value:
            return
        enrollment = await eq.get_enrollment(s, touch.enrollment_id)
        assert enrollment is not None
        config = engine.catalog.config
        box = config.mailbox(enrollment.mailbox or enrollment.owner) if config else None
        policy = box.limits.unknown_outcome if box else UnknownOutcome.HOLD
        reason = "the sending process stopped during the SMTP conversation"
        await settle_unknown(s, touch, enrollment, policy, reason, now)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _wait_any(stop: asyncio.Event, wakeup: asyncio.Event, seconds: float) -> None:
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wakeup.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()


class LocalRunner:
    """`sequencer run`: dispatcher and senders in one process, no Redis."""

    def __init__(
        self, engine: Engine, sender: Sender, *, concurrency: int = 8, **options: object
    ) -> None:
        self.sender = sender
        self.concurrency = asyncio.Semaphore(concurrency)
        self.in_flight: set[asyncio.Task[None]] = set()
        self._stop: asyncio.Event | None = None
        self.dispatcher = Dispatcher(engine, self._start_send, sender=sender, **options)  # type: ignore[arg-type]

    async def _start_send(self, touch_id: int) -> bool:
        mailbox = self.dispatcher.mailbox_hints.get(touch_id)
        await self.concurrency.acquire()
        if self._stop is not None and self._stop.is_set():
            # The stop came while this waited for a free slot: start nothing new.
            self.concurrency.release()
            return False
        self.dispatcher.own.add(touch_id)
        task = asyncio.create_task(self._send(touch_id, mailbox))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return True

    async def _send(self, touch_id: int, mailbox: str | None) -> None:
        try:
            outcome = await self.sender.send_touch(touch_id, mailbox)
            self.dispatcher.stats.count(outcome)
        except Exception:
            # One bad touch never takes the runner down; housekeeping recovers its state.
            log.exception("sending touch %s failed unexpectedly", touch_id)
        finally:
            self.dispatcher.own.discard(touch_id)
            self.concurrency.release()

    async def run(self, stop: asyncio.Event) -> Stats:
        """Send until ``stop`` is set, then finish the sends in flight (never abandon one
        mid-conversation) and return; touches claimed but not yet started go back to the
        queue."""
        self._stop = stop
        await self.dispatcher.run(stop)
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)
        return self.dispatcher.stats
