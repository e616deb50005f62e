"""What an inbound message does: classified, matched to enrollments, acted on, and the folder's
cursor moved, all in one transaction, so a message is never lost nor acted on twice.

A backlog (thousands of messages after downtime) is processed a batch per transaction
(``InboxProcessor.batch``): the cursor moves once per batch, the messages are recorded in one
statement, and lookups that would be made for every message (is this sender anyone we know?
was this message recorded before?) are made once for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.arrival import arrival_time
from sequencer.core.calendar import add_delay
from sequencer.core.delays import Delay, DelayUnit
from sequencer.core.inbound import Classification, InboundKind, classify
from sequencer.core.model import OutOfOfficeAction
from sequencer.core.prospects import FREE_MAIL_DOMAINS
from sequencer.core.scheduling import holiday_calendar, schedule_zone
from sequencer.core.states import (
    EnrollmentState,
    EventKind,
    StopReason,
    SuppressionReason,
)
from sequencer.mail.compose import parse_message_id
from sequencer.runtime.engine import Engine
from sequencer.store import enrollments as eq
from sequencer.store import inbound as iq
from sequencer.store import prospects as pq
from sequencer.store import touches as tq
from sequencer.store.events import NewEvent, add_events
from sequencer.store.models import Enrollment

log = logging.getLogger("sequencer.inbox")

#: Transient bounces for one address within this period before it counts as dead.
TRANSIENT_WINDOW = timedelta(days=7)
TRANSIENT_LIMIT = 3
ONE_BUSINESS_DAY = Delay(1, DelayUnit.BUSINESS_DAYS)


@dataclass
class Handled:
    """What processing one message did."""

    classification: Classification
    duplicate: bool = False
    enrollments: list[int] = field(default_factory=list)  # enrollments it matched
    action: str = "recorded"


@dataclass(frozen=True)
class _Lookups:
    """Asked once for a batch of messages; each a superset of what the per-message query it
    saves could find (within a batch, enrollments only ever leave the live states)."""

    known_senders: frozenset[str]  # senders that are a prospect's address or alias
    company_sequences: tuple[int, ...]  # ids of the sequences with `company_reply`
    company_domains: frozenset[str]  # sender domains with live enrollments in those


@dataclass
class InboxBatch:
    """Messages of one folder processed in one transaction; see ``InboxProcessor.batch``."""

    session: AsyncSession
    mailbox: str
    folder: str
    uidvalidity: int
    now: datetime
    classified: dict[int, tuple[bytes, Classification]]
    lookups: _Lookups
    recorded: set[int]  # UIDs of this folder's messages already recorded
    pending: list[dict[str, Any]] = field(default_factory=list)  # records not yet written
    last_uid: int | None = None

    def pass_over(self, uid: int) -> None:
        """Move the cursor past ``uid`` (when the batch commits) without acting on it."""
        self.last_uid = uid if self.last_uid is None else max(self.last_uid, uid)

    def record(self, values: dict[str, Any]) -> bool:
        """Note a message's record for writing with the others; False when it was recorded
        before (seen twice: processed once)."""
        if values["uid"] in self.recorded:
            return False
        self.recorded.add(values["uid"])
        self.pending.append(values)
        return True

    async def flush(self) -> None:
        """Write the records noted so far (before anything that reads them)."""
        if self.pending:
            await iq.record_messages(self.session, self.pending)
            self.pending = []


# The batch open in this task, if any: process() calls for its folder join it.
_open_batch: ContextVar[InboxBatch | None] = ContextVar("sequencer_inbox_batch", default=None)


class InboxProcessor:
    """Applies inbound messages for one engine."""

    def __init__(self, engine: Engine, *, secret: bytes) -> None:
        self.engine = engine
        self.secret = secret
        config = engine.catalog.config
        self.our_domains = sorted({b.domain for b in config.mailboxes}) if config else []

    async def process(
        self, mailbox: str, folder: str, uidvalidity: int, uid: int, raw: bytes
    ) -> Handled:
        """Classify, match and act on one message, and move the folder's cursor past it, in
        one transaction. A message already recorded only moves the cursor. Inside ``batch``
        for the same folder, the batch's transaction is used instead."""
        batch = _open_batch.get()
        if batch is not None and (batch.mailbox, batch.folder, batch.uidvalidity) == (
            mailbox,
            folder,
            uidvalidity,
        ):
            return await self._process_in(batch, uid, raw)
        now = self.engine.now()
        result = classify(raw, today=now.date(), our_domains=self.our_domains)
        async with self.engine.db.transaction() as s:
            handled = await self._apply(
                s, mailbox, folder, uidvalidity, uid, result, now, arrival_time(raw, now)
            )
            await iq.set_cursor(s, mailbox, folder, uidvalidity, uid, now)
        return handled

    @asynccontextmanager
    async def batch(
        self, mailbox: str, folder: str, uidvalidity: int, messages: Sequence[tuple[int, bytes]]
    ) -> AsyncIterator[InboxBatch]:
        """One transaction for several messages of one folder, given as (UID, raw bytes):
        ``process`` calls for this folder made inside it (in this task) join it, and the cursor
        moves past the last message processed (or passed over) when it commits. Any failure
        rolls back the whole batch; process its messages one at a time then, to find the one
        at fault. The messages are classified up front, and the senders looked up at once."""
        now = self.engine.now()
        classified = {
            uid: (raw, classify(raw, today=now.date(), our_domains=self.our_domains))
            for uid, raw in messages
        }
        async with self.engine.db.transaction() as s:
            lookups = await self._lookups(s, [c for _, c in classified.values()])
            recorded = await iq.recorded_uids(s, mailbox, folder, uidvalidity, list(classified))
            batch = InboxBatch(s, mailbox, folder, uidvalidity, now, classified, lookups, recorded)
            token = _open_batch.set(batch)
            try:
                yield batch
            finally:
                _open_batch.reset(token)
            await batch.flush()
            if batch.last_uid is not None:
                await iq.set_cursor(s, mailbox, folder, uidvalidity, batch.last_uid, now)

    async def _process_in(self, batch: InboxBatch, uid: int, raw: bytes) -> Handled:
        known_raw, result = batch.classified.get(uid, (None, None))
        if known_raw is not raw or result is None:
            result = classify(raw, today=batch.now.date(), our_domains=self.our_domains)
        handled = await self._apply(
            batch.session,
            batch.mailbox,
            batch.folder,
            batch.uidvalidity,
            uid,
            result,
            batch.now,
            arrival_time(raw, batch.now),
            batch,
        )
        batch.pass_over(uid)
        return handled

    async def _lookups(self, s: AsyncSession, found: Sequence[Classification]) -> _Lookups:
        senders = {c.sender.lower() for c in found if c.sender}
        names = [n for n, q in self.engine.sequences.items() if q.stop.company_reply]
        ids = tuple((await eq.sequence_ids(s, names)).values()) if names else ()
        domains = {
            c.sender.lower().rsplit("@", 1)[-1]
            for c in found
            if c.kind is InboundKind.REPLY and c.sender
        } - FREE_MAIL_DOMAINS
        return _Lookups(
            frozenset(await iq.known_addresses(s, senders)) if senders else frozenset(),
            ids,
            frozenset(await iq.domains_with_live_enrollments(s, domains, ids))
            if ids and domains
            else frozenset(),
        )

    async def _apply(
        self,
        s: AsyncSession,
        mailbox: str,
        folder: str,
        uidvalidity: int,
        uid: int,
        c: Classification,
        now: datetime,
        arrived: datetime | None = None,
        batch: InboxBatch | None = None,
    ) -> Handled:
        lookups = batch.lookups if batch is not None else None
        matched = await self._match(s, mailbox, c, lookups)
        details: dict[str, object] = {
            "reason": c.reason,
            "recipients": list(c.recipients),
            "status": c.status,
            "permanent": c.permanent,
            "return_date": c.return_date.isoformat() if c.return_date else None,
        }
        if c.kind is InboundKind.BOUNCE and c.permanent is False and c.recipients:
            details["transient_recipient"] = c.recipients[0]
        record: dict[str, Any] = {
            "mailbox": mailbox,
            "folder": folder,
            "uidvalidity": uidvalidity,
            "uid": uid,
            "message_id": (c.message_id or "")[:998] or None,
            "sender": (c.sender or "")[:254] or None,
            "subject": c.subject[:2000],
            "kind": c.kind.value,
            "enrollment_id": matched[0].id if matched else None,
            "details": details,
            # With processed_at (the moment any stop happened): reply-to-stop latency.
            "received_at": arrived,
            "processed_at": now,
        }
        if batch is not None:
            new = batch.record(record)
        else:
            new = await iq.record_message(s, record) is not None
        handled = Handled(c, duplicate=not new, enrollments=[e.id for e in matched])
        if handled.duplicate:
            return handled
        kind = c.kind
        if kind is InboundKind.REPLY and matched:
            handled.action = await self._replied(s, matched, c, now)
        elif kind is InboundKind.REPLY and c.sender:
            # Someone we never wrote to, answering from an account we are working: where the
            # sequence says so, that is the account replying.
            domain = c.sender.lower().rsplit("@", 1)[-1]
            stopped = await self._company_reply(s, domain, None, now, lookups)
            if stopped:
                handled.action = f"stopped {stopped} enrollment(s): someone at {domain} replied"
        elif kind is InboundKind.OUT_OF_OFFICE and matched:
            handled.action = await self._out_of_office(s, matched, c, now)
        elif kind is InboundKind.UNSUBSCRIBE and c.sender:
            handled.action = await self._unsubscribe(s, c.sender, now)
        elif kind is InboundKind.BOUNCE:
            if batch is not None:
                await batch.flush()  # bounces count the earlier ones recorded
            handled.action = await self._bounce(s, matched, c, now)
        return handled

    # --- matching ---------------------------------------------------------------------------

    async def _match(
        self, s: AsyncSession, mailbox: str, c: Classification, lookups: _Lookups | None = None
    ) -> list[Enrollment]:
        """Our Message-IDs in In-Reply-To/References first (a bounce: the one it reports);
        then the sender's address among live enrollments sending from this mailbox; then the
        prospect's known aliases (not looked for when ``lookups`` says nobody has it)."""
        ids = list(c.in_reply_to)
        if c.original_message_id:
            ids.insert(0, c.original_message_id)
        for value in reversed(ids):
            parsed = parse_message_id(self.secret, value)
            if parsed is None:
                continue
            enrollment = await eq.get_enrollment(s, parsed[0], lock=True)
            if enrollment is not None:
                return [enrollment]
        if c.kind is InboundKind.BOUNCE:
            found: list[Enrollment] = []
            for recipient in c.recipients:
                found += await iq.live_enrollments_by_email(s, recipient.lower())
            return found
        if c.sender and (lookups is None or c.sender.lower() in lookups.known_senders):
            found = await iq.live_enrollments_by_email(s, c.sender.lower(), mailbox)
            if found:
                return found
            # Known aliases: the prospect writing from another of their addresses.
            prospect_id = await pq.prospect_by_alias(s, c.sender)
            if prospect_id is not None:
                return await eq.enrollments_of(s, prospect_id, live_only=True, lock=True)
        return []

    # --- actions ----------------------------------------------------------------------------

    async def _replied(
        self, s: AsyncSession, matched: Sequence[Enrollment], c: Classification, now: datetime
    ) -> str:
        """A reply stops the enrollment it answers and every other live enrollment of that
        prospect; with `company_reply`, also the others at the same company."""
        enrollment = matched[0]
        attributed = await self._attribution(s, enrollment, c)
        others = await eq.enrollments_of(s, enrollment.prospect_id, live_only=True, lock=True)
        targets = {e.id: e for e in [*matched, *others] if e.state in ("active", "paused")}
        events = [
            NewEvent(
                enrollment.prospect_id,
                EventKind.REPLIED,
                now,
                enrollment.id,
                attributed.get("touch_id"),  # type: ignore[arg-type]
                {**attributed, "subject": c.subject[:200], "text": c.reply_text[:500]},
            )
        ]
        await add_events(s, events)
        await self.engine._stop_all(s, list(targets.values()), StopReason.REPLIED, now)
        stopped = len(targets)
        prospect = (await pq.get_prospects(s, [enrollment.prospect_id]))[enrollment.prospect_id]
        domain = prospect.email.rsplit("@", 1)[-1]
        stopped += await self._company_reply(s, domain, prospect.id, now)
        return f"stopped {stopped} enrollment(s): replied"

    async def _attribution(
        self, s: AsyncSession, enrollment: Enrollment, c: Classification
    ) -> dict[str, object]:
        """Which touch and template earned the reply: the one it answers, else the last sent."""
        sent = await tq.sent_emails(s, enrollment.id)
        by_id = {t.message_id: t for t in sent if t.message_id}
        touch = next((by_id[m] for m in reversed(c.in_reply_to) if m in by_id), None)
        touch = touch or (sent[-1] if sent else None)
        if touch is None:
            return {}
        return {
            "touch_id": touch.id,
            "step": touch.step_id,
            "attempt": touch.step_index + 1,
            "template": touch.template,
        }

    async def _company_reply(
        self,
        s: AsyncSession,
        domain: str,
        prospect_id: int | None,
        now: datetime,
        lookups: _Lookups | None = None,
    ) -> int:
        """Stop colleagues' enrollments in sequences that say `company_reply: true` (never for
        a free-mail domain, where 'the same company' means nothing)."""
        if domain in FREE_MAIL_DOMAINS:
            return 0
        if lookups is not None:
            if domain not in lookups.company_domains:
                return 0
            ids: Sequence[int] = lookups.company_sequences
        else:
            names = [n for n, q in self.engine.sequences.items() if q.stop.company_reply]
            ids = list((await eq.sequence_ids(s, names)).values())
        colleagues = [
            e
            for e in await iq.live_enrollments_at_domain(s, domain, ids)
            if e.prospect_id != prospect_id
        ]
        if colleagues:
            await self.engine._stop_all(s, colleagues, StopReason.ACCOUNT_REPLIED, now)
        return len(colleagues)

    async def _out_of_office(
        self, s: AsyncSession, matched: Sequence[Enrollment], c: Classification, now: datetime
    ) -> str:
        """Pause until the return date plus one business day (a default when no date is given,
        never longer than the policy allows); it resumes by itself. Never counts as a reply."""
        paused = 0
        for enrollment in matched:
            if enrollment.state != EnrollmentState.ACTIVE.value:
                continue
            sequence = await self.engine._sequence_for(s, enrollment)
            policy = sequence.out_of_office
            prospect = (await pq.get_prospects(s, [enrollment.prospect_id]))[enrollment.prospect_id]
            zone = schedule_zone(sequence, prospect.timezone)
            window, holidays = (
                sequence.schedule.window,
                holiday_calendar(sequence.schedule.holidays),
            )
            latest = add_delay(now.astimezone(zone), policy.max_pause, zone, window, holidays)
            if c.return_date is not None and c.return_date >= now.astimezone(zone).date():
                back = datetime.combine(c.return_date, time(0), zone)
                until = add_delay(back, ONE_BUSINESS_DAY, zone, window, holidays)
            else:
                until = add_delay(
                    now.astimezone(zone), policy.default_pause, zone, window, holidays
                )
            until = min(until, latest)
            await add_events(
                s,
                [
                    NewEvent(
                        enrollment.prospect_id,
                        EventKind.OUT_OF_OFFICE,
                        now,
                        enrollment.id,
                        data={
                            "return_date": c.return_date.isoformat() if c.return_date else None,
                            "until": until.isoformat(),
                            "policy": policy.action.value,
                        },
                    )
                ],
            )
            if policy.action is OutOfOfficeAction.IGNORE:
                continue
            await eq.set_state(s, enrollment.id, EnrollmentState.PAUSED, now, paused_until=until)
            await add_events(
                s,
                [
                    NewEvent(
                        enrollment.prospect_id,
                        EventKind.PAUSED,
                        now,
                        enrollment.id,
                        data={"until": until.isoformat(), "reason": "out of office"},
                    )
                ],
            )
            paused += 1
        return f"paused {paused} enrollment(s): out of office"

    async def _unsubscribe(self, s: AsyncSession, sender: str, now: datetime) -> str:
        """An unsubscribe request: never mail them again, from any sequence."""
        await pq.add_suppression(
            s, sender.lower(), SuppressionReason.UNSUBSCRIBED.value, "asked by email", now
        )
        live = await iq.live_enrollments_by_email(s, sender.lower())
        for enrollment in live:
            await add_events(
                s,
                [
                    NewEvent(
                        enrollment.prospect_id,
                        EventKind.UNSUBSCRIBED,
                        now,
                        enrollment.id,
                        data={"how": "email"},
                    )
                ],
            )
        await self.engine._stop_all(s, live, StopReason.UNSUBSCRIBED, now)
        return f"suppressed {sender}; stopped {len(live)} enrollment(s)"

    async def _bounce(
        self, s: AsyncSession, matched: Sequence[Enrollment], c: Classification, now: datetime
    ) -> str:
        """A permanent bounce stops and suppresses; transient ones are recorded and count as
        permanent after repeats."""
        recipients = [r.lower() for r in c.recipients]
        if not recipients and matched:
            prospects = await pq.get_prospects(s, [e.prospect_id for e in matched])
            recipients = sorted({p.email for p in prospects.values()})
        permanent = bool(c.permanent)
        if not permanent and recipients:
            # This bounce is already recorded, so it is part of the count.
            seen = await iq.transient_bounces(s, recipients[0], now - TRANSIENT_WINDOW)
            permanent = seen >= TRANSIENT_LIMIT
        if not permanent:
            return "recorded: temporary bounce"
        words = f"{c.status or ''} {c.reason}".strip()
        stopped = 0
        for recipient in recipients:
            await pq.add_suppression(s, recipient, SuppressionReason.BOUNCED.value, words, now)
            live = await iq.live_enrollments_by_email(s, recipient)
            for enrollment in live:
                await add_events(
                    s,
                    [
                        NewEvent(
                            enrollment.prospect_id,
                            EventKind.BOUNCED,
                            now,
                            enrollment.id,
                            data={"reason": words},
                        )
                    ],
                )
            await self.engine._stop_all(s, live, StopReason.BOUNCED, now)
            stopped += len(live)
        return f"suppressed {', '.join(recipients)}; stopped {stopped} enrollment(s)"
