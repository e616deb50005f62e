"""Sends one touch: last check under lock, `sending` committed before SMTP, outcome recorded."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.config import MailboxConfig
from sequencer.core.errors import (
    ConfigError,
    InvalidState,
    MailboxUnavailable,
    NotFound,
    TemplateError,
)
from sequencer.core.mailbox_config import UnknownOutcome
from sequencer.core.model import Channel, Sequence, Step, Threading
from sequencer.core.scheduling import holiday_calendar, schedule_zone
from sequencer.core.sending import SendContext, Verdict, check_send, retry_delay
from sequencer.core.states import (
    TOUCH_PENDING,
    TOUCH_TERMINAL,
    EnrollmentState,
    EventKind,
    StopReason,
    SuppressionReason,
    TouchState,
)
from sequencer.core.templates import Renderer, StepInfo, build_context
from sequencer.core.unsubscribe import make_token, unsubscribe_url
from sequencer.mail.compose import (
    OutgoingEmail,
    build_message,
    message_bytes,
    message_id,
    reply_subject,
    thread_index,
)
from sequencer.mail.imap import append_message, find_message_id, imap_settings
from sequencer.mail.smtp import SendOutcome, SendResult
from sequencer.runtime.clock import SystemClock
from sequencer.runtime.engine import Engine
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.planner import LIMIT_LOOKBACK
from sequencer.runtime.recent_sends import RecentSends
from sequencer.store import enrollments as eq
from sequencer.store import mailboxes as mq
from sequencer.store import prospects as pq
from sequencer.store import touches as tq
from sequencer.store.events import NewEvent, add_events
from sequencer.store.models import Enrollment, Prospect, Touch

log = logging.getLogger("sequencer.sender")

_TERMINAL = frozenset(st.value for st in TOUCH_TERMINAL)
#: What a touch may be in when it is completed (Engine._complete allows the same).
_COMPLETABLE = frozenset(st.value for st in (*TOUCH_PENDING, TouchState.SENDING))

#: A mailbox that cannot connect is left alone this long before its touches are tried again.
MAILBOX_BACKOFF = timedelta(minutes=5)
#: A mailbox whose bounce rate trips the threshold rests this long.
BOUNCE_PAUSE = timedelta(hours=24)
#: How long a provider may take to file its copy in the Sent folder before we look.
SENT_FOLDER_GRACE = timedelta(minutes=2)
#: Bounce rates are only judged once a mailbox has sent this many emails in 24 hours.
BOUNCE_MIN_SAMPLE = 20


class Outcome(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"  # a temporary failure; tried again later
    BOUNCED = "bounced"
    FAILED = "failed"
    UNKNOWN = "unknown"
    LATER = "later"  # a window, cap or pause moved it
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # nothing to do (already done, paused, claimed elsewhere)
    MAILBOX_DOWN = "mailbox_down"


@dataclass(frozen=True)
class Prepared:
    """A touch marked `sending`, with the bytes to send."""

    touch_id: int
    mailbox: str
    recipient: str
    message: bytes
    message_id: str
    #: The mailbox was marked healthy when this was prepared (no need to mark it again).
    healthy: bool = True


class Sender:
    """Sends touches for an engine. Safe under at-least-once job delivery: the database decides
    whether a send happens, so a second delivery of the same job does nothing."""

    def __init__(
        self,
        engine: Engine,
        mailboxes: Mailboxes,
        *,
        secret: bytes,
        renderer: Renderer | None = None,
    ) -> None:
        self.engine = engine
        self.mailboxes = mailboxes
        self.secret = secret
        self.renderer = renderer or Renderer()
        config = engine.catalog.config
        self.policy = config.sending if config else None
        self.random = random.Random()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._sequence_names: dict[int, str] = {}
        self._recent = RecentSends(remember=isinstance(engine.clock, SystemClock))

    async def send_touch(self, touch_id: int, mailbox: str | None = None) -> Outcome:
        """Send one touch if it is still due and allowed. ``mailbox``: the address it goes
        out from, when the caller already read it (the dispatcher does, for a whole batch)."""
        if mailbox is None:
            mailbox = await self._mailbox_of(touch_id)
        # Wait for one of the mailbox's connections *before* marking the touch `sending`: a
        # crash then leaves as `unknown` only emails that were really on the wire.
        async with self._slot(mailbox):
            prepared = await self._prepare(touch_id, mailbox)
            if isinstance(prepared, Outcome):
                return prepared
            try:
                pool = self.mailboxes.pool(prepared.mailbox)
            except ConfigError as exc:
                return await self._mailbox_down(prepared, str(exc))
            result = await pool.send(prepared.mailbox, prepared.recipient, prepared.message)
        return await self._record(prepared, result)

    async def _mailbox_of(self, touch_id: int) -> str | None:
        async with self.engine.db.transaction() as s:
            return (await tq.mailboxes_of(s, [touch_id])).get(touch_id)

    async def _sequence(self, s: AsyncSession, enrollment: Enrollment) -> Sequence:
        """The enrollment's sequence; the id-to-name lookup is remembered (names never change
        for an id), the definition is always the engine's current one."""
        name = self._sequence_names.get(enrollment.sequence_id)
        if name is not None and name in self.engine.sequences:
            return self.engine.sequences[name]
        sequence = await self.engine._sequence_for(s, enrollment)
        self._sequence_names[enrollment.sequence_id] = sequence.name
        return sequence

    def _slot(self, address: str | None) -> asyncio.Semaphore:
        """At most as many sends in flight per mailbox as it has SMTP connections."""
        key = address or ""
        if key not in self._slots:
            size = 2
            box = self.mailboxes.box(key) if address else None
            if box is not None:
                try:
                    size = self.mailboxes.pool(key).settings.pool_size
                except ConfigError:
                    size = 1
            self._slots[key] = asyncio.Semaphore(size)
        return self._slots[key]

    # --- before SMTP ------------------------------------------------------------------------

    async def _prepare(self, touch_id: int, slot: str | None) -> Prepared | Outcome:
        engine = self.engine
        async with engine.db.transaction() as s:
            now = engine.now()
            found = await tq.touch_for_sending(s, touch_id)
            if found is None:
                return Outcome.SKIPPED
            touch, enrollment, prospect = found
            if touch.state in _TERMINAL or touch.state == TouchState.SENDING.value:
                # Done already; or another attempt is in flight, or recovery will judge it.
                return Outcome.SKIPPED
            address = enrollment.mailbox or enrollment.owner
            if slot is not None and address != slot:
                # The enrollment moved to another mailbox since the touch was claimed: this
                # holds the wrong mailbox's connection slot, so it goes back to the queue.
                await tq.set_touch_state(s, [touch.id], TouchState.SCHEDULED, now)
                return Outcome.SKIPPED
            sequence = await self._sequence(s, enrollment)
            step = _step(sequence, touch.step_id)
            if step is None or step.channel is not Channel.EMAIL:
                await engine._cancel(s, [touch], now, "the step is no longer an email step")
                return Outcome.CANCELLED
            box = self.mailboxes.box(address)
            if box is None:
                await self._reschedule(s, touch, now + MAILBOX_BACKOFF, now)
                await mq.mailbox_state(s, address, now)
                await mq.update_mailbox(
                    s,
                    address,
                    now,
                    healthy=False,
                    status_note=f"{address} is not configured in sequencer.yaml",
                )
                return Outcome.MAILBOX_DOWN
            state = await mq.mailbox_state(s, address, now, lock=True)
            # The time once the mailbox's lock is held: while this waited, other sends may
            # have gone out, and spacing and caps must be judged against them.
            now = engine.now()
            verdict = await self._check(
                s,
                touch,
                enrollment,
                prospect,
                sequence,
                step,
                box,
                state.paused_until,
                state.last_sent_at,
                now,
            )
            if verdict is not None:
                return verdict
            try:
                email = await self._compose(
                    s, touch, enrollment, prospect, sequence, step, box, now
                )
            except TemplateError as exc:
                await self._fail(s, touch, enrollment, now, f"cannot render: {exc}")
                return Outcome.FAILED
            await tq.mark_sending(s, touch.id, email.message_id, touch.template, now)
            await mq.update_mailbox(s, address, now, last_sent_at=now)
            self._recent.add(address, now)
            if email.in_reply_to is None:
                await eq.set_thread(s, enrollment.id, email.subject, email.message_id)
            return Prepared(
                touch.id,
                address,
                prospect.email,
                message_bytes(build_message(email)),
                email.message_id,
                healthy=state.healthy,
            )

    async def _check(
        self,
        s: AsyncSession,
        touch: Touch,
        enrollment: Enrollment,
        prospect: Prospect,
        sequence: Sequence,
        step: Step,
        box: MailboxConfig,
        paused_until: datetime | None,
        last_sent_at: datetime | None,
        now: datetime,
    ) -> Outcome | None:
        """The last check, under the row locks; None when the touch may go out now."""
        blocked = await pq.suppressed(s, [prospect.email])
        limits = sequence.limits
        contacts: list[datetime] = []
        if limits.min_gap is not None or limits.max_per_week is not None:
            # Without either limit the prospect's other touches cannot hold this one back.
            contacts = (await tq.contact_times(s, [prospect.id], now - LIMIT_LOOKBACK)).get(
                prospect.id, []
            )
        policy = self.policy
        company_limit = policy.company_daily_limit if policy else None
        cap = box.limits.daily_cap
        context = SendContext(
            now=now,
            enrollment_state=enrollment.state,
            suppressed_by=blocked.get(prospect.email),
            zone=schedule_zone(sequence, prospect.timezone),
            window=sequence.schedule.window,
            holidays=holiday_calendar(sequence.schedule.holidays),
            anytime=step.anytime,
            # Touches that already happened; ones planned for later are checked when due.
            prospect_contacts=[
                t for t in contacts if t <= now and abs((t - touch.due_at).total_seconds()) > 1
            ],
            limits=limits,
            mailbox_paused_until=paused_until,
            mailbox_sends=await self._recent.at_cap(s, box.address, cap, last_sent_at, now),
            daily_cap=cap,
            last_sent_at=last_sent_at,
            min_spacing=box.limits.min_spacing.fixed_duration()
            or box.limits.min_spacing.approximate(),
            company_sends=(
                await mq.company_sends(s, prospect.domain, now, company_limit)
                if prospect.domain and company_limit is not None
                else []
            ),
            company_limit=company_limit,
        )
        check = check_send(context)
        if check.verdict is Verdict.SEND:
            return None
        if check.verdict is Verdict.WAIT:
            await tq.set_touch_state(s, [touch.id], TouchState.SCHEDULED, now)
            return Outcome.SKIPPED
        if check.verdict is Verdict.CANCEL:
            if context.suppressed_by:
                await self.engine._stop_all(s, [enrollment], StopReason.SUPPRESSED, now)
            else:
                await self.engine._cancel(s, [touch], now, check.reason)
            return Outcome.CANCELLED
        assert check.at is not None
        await self._reschedule(s, touch, check.at, now)
        return Outcome.LATER

    async def _compose(
        self,
        s: AsyncSession,
        touch: Touch,
        enrollment: Enrollment,
        prospect: Prospect,
        sequence: Sequence,
        step: Step,
        box: MailboxConfig,
        now: datetime,
    ) -> OutgoingEmail:
        templates = self.engine.catalog.templates
        name = touch.template or step.template
        if name is None or name not in templates:
            raise TemplateError(f"template {name!r} is missing from the templates folder")
        config = self.engine.catalog.config
        token = make_token(self.secret, prospect.email)
        public = config.sender.public_url if config and config.sender.public_url else ""
        link = unsubscribe_url(public, token) if public else None
        context = build_context(
            prospect=pq.prospect_fields(prospect),
            sender=config.sender_fields(box.address) if config else {},
            step=StepInfo(step.id, touch.step_index + 1, len(sequence.steps), step.channel.value),
            unsubscribe_url=link or f"mailto:{box.address}?subject=unsubscribe",
        )
        rendered = self.renderer.render(templates[name], context)
        own_id = message_id(self.secret, enrollment.id, step.id, box.domain)
        thread = await self._thread(s, enrollment, sequence, step)
        in_reply_to = None
        references: tuple[str, ...] = ()
        subject = rendered.subject
        topic = rendered.subject
        index = None
        if thread:
            root = thread[0]
            topic = enrollment.thread_subject or rendered.subject
            subject = reply_subject(topic)
            references = tuple(t.message_id for t in thread if t.message_id)
            in_reply_to = references[-1] if references else None
            root_date = root.completed_at or root.updated_at
            index = thread_index(root.message_id or own_id, root_date, len(thread))
        else:
            index = thread_index(own_id, now, 0)
        return OutgoingEmail(
            from_address=box.address,
            from_name=box.name,
            to_address=prospect.email,
            to_name=" ".join(p for p in (prospect.first_name, prospect.last_name) if p) or None,
            subject=subject,
            text=rendered.text,
            html=rendered.html,
            message_id=own_id,
            date=now,
            in_reply_to=in_reply_to,
            references=references,
            thread_topic=topic,
            thread_index=index,
            unsubscribe_url=link,
            unsubscribe_mailto=f"mailto:{box.address}?subject=unsubscribe",
        )

    async def _thread(
        self, s: AsyncSession, enrollment: Enrollment, sequence: Sequence, step: Step
    ) -> list[Touch]:
        """The emails this one replies under: those since the last thread start. Empty when
        this email starts a thread (the first email, or a step with `thread: new`)."""
        if step.thread is Threading.NEW or _first_email(sequence, step):
            return []
        sent = await tq.sent_emails(s, enrollment.id)
        starts = {st.id for st in sequence.steps if st.thread is Threading.NEW}
        thread: list[Touch] = []
        for touch in sent:
            if touch.step_id in starts:
                thread = []
            thread.append(touch)
        return thread

    # --- after SMTP -------------------------------------------------------------------------

    async def _record(self, prepared: Prepared, result: SendResult) -> Outcome:
        if result.outcome is SendOutcome.ACCEPTED:
            await self._record_sent(prepared)
            await self._save_to_sent(prepared)
            return Outcome.SENT
        if result.outcome is SendOutcome.MAILBOX_DOWN:
            return await self._mailbox_down(prepared, result.message)
        async with self.engine.db.transaction() as s:
            now = self.engine.now()
            touch = await tq.get_touch(s, prepared.touch_id, lock=True)
            assert touch is not None
            enrollment = await eq.get_enrollment(s, touch.enrollment_id, lock=True)
            assert enrollment is not None
            words = f"{result.code} {result.message}".strip() if result.code else result.message
            if result.outcome is SendOutcome.REJECTED:
                await self._bounce(s, touch, enrollment, prepared, words, now)
                return Outcome.BOUNCED
            if result.outcome is SendOutcome.TRANSIENT:
                attempts_allowed = self.policy.max_attempts if self.policy else 5
                if touch.attempts >= attempts_allowed:
                    await self._fail(
                        s, touch, enrollment, now, f"gave up after {touch.attempts} tries: {words}"
                    )
                    return Outcome.FAILED
                base = (
                    self.policy.retry_after.approximate() if self.policy else timedelta(minutes=5)
                )
                later = now + retry_delay(touch.attempts, base, self.random.random())
                await tq.reschedule(s, touch.id, later, now)
                await tq.set_touch_state(s, [touch.id], TouchState.SCHEDULED, now, error=words)
                await add_events(
                    s,
                    [
                        NewEvent(
                            touch.prospect_id,
                            EventKind.DEFERRED,
                            now,
                            enrollment.id,
                            touch.id,
                            {"step": touch.step_id, "reason": words, "retry_at": later.isoformat()},
                        )
                    ],
                )
                return Outcome.DEFERRED
            await self._unknown(s, touch, enrollment, prepared, words, now)
        return Outcome.UNKNOWN

    async def _record_sent(self, prepared: Prepared) -> None:
        """The server took the email: `sent`, the event, and the enrollment's next step
        planned from now. What Engine._complete does for any touch, in fewer round trips:
        touch, enrollment and prospect in one read, the sequence from memory, and no look for
        a rep task (an email step never has one)."""
        engine = self.engine
        async with engine.db.transaction() as s:
            now = engine.now()
            found = await tq.touch_for_sending(s, prepared.touch_id)
            if found is None:
                raise NotFound(f"no touch {prepared.touch_id}")
            touch, enrollment, prospect = found
            if touch.state not in _COMPLETABLE:
                raise InvalidState(f"touch {touch.id} is already {touch.state}")
            await tq.set_touch_state(s, [touch.id], TouchState.SENT, now, completed=True)
            sequence = await self._sequence(s, enrollment)
            data: dict[str, object] = {
                "step": touch.step_id,
                "attempt": touch.step_index + 1,
                "total": len(sequence.steps),
                "channel": touch.channel,
                "template": touch.template,
                "message_id": prepared.message_id,
                "mailbox": prepared.mailbox,
            }
            await add_events(
                s, [NewEvent(touch.prospect_id, EventKind.SENT, now, enrollment.id, touch.id, data)]
            )
            if enrollment.state == EnrollmentState.ACTIVE.value:
                # Paused: resume plans the next step; ended: nothing more.
                await engine.planner.plan(s, sequence, [(enrollment, prospect, now)], now)
            if not prepared.healthy:
                await mq.mark_healthy(s, prepared.mailbox, now)

    async def _bounce(
        self,
        s: AsyncSession,
        touch: Touch,
        enrollment: Enrollment,
        prepared: Prepared,
        words: str,
        now: datetime,
    ) -> None:
        """A permanent rejection: the touch failed, the address is suppressed and every live
        enrollment of the prospect stops as bounced."""
        await tq.set_touch_state(s, [touch.id], TouchState.FAILED, now, error=words, completed=True)
        await pq.add_suppression(s, prepared.recipient, SuppressionReason.BOUNCED.value, words, now)
        live = await eq.enrollments_of(s, touch.prospect_id, live_only=True, lock=True)
        await self.engine._stop_all(s, live, StopReason.BOUNCED, now)
        await add_events(
            s,
            [
                NewEvent(
                    touch.prospect_id,
                    EventKind.BOUNCED,
                    now,
                    enrollment.id,
                    touch.id,
                    {"step": touch.step_id, "reason": words, "mailbox": prepared.mailbox},
                )
            ],
        )
        await self._check_bounce_rate(s, prepared.mailbox, now)

    async def _check_bounce_rate(self, s: AsyncSession, address: str, now: datetime) -> None:
        threshold = self.policy.bounce_pause_threshold if self.policy else 0.05
        sent = await mq.mailbox_send_count(s, address, now)
        bounced = await mq.bounces_since(s, address, now - timedelta(hours=24))
        if sent >= BOUNCE_MIN_SAMPLE and bounced / sent > threshold:
            await mq.mailbox_state(s, address, now)
            await mq.update_mailbox(
                s,
                address,
                now,
                paused_until=now + BOUNCE_PAUSE,
                status_note=(
                    f"paused: {bounced} bounces in {sent} emails over 24 hours "
                    f"({bounced / sent:.0%} > {threshold:.0%}); clean the list before resuming"
                ),
            )
            log.warning("mailbox %s paused for its bounce rate (%d/%d)", address, bounced, sent)

    async def _fail(
        self, s: AsyncSession, touch: Touch, enrollment: Enrollment, now: datetime, reason: str
    ) -> None:
        """The touch failed for good; the enrollment moves on to its next step, so one broken
        email never silently ends the follow-up."""
        await tq.set_touch_state(
            s, [touch.id], TouchState.FAILED, now, error=reason, completed=True
        )
        await add_events(
            s,
            [
                NewEvent(
                    touch.prospect_id,
                    EventKind.FAILED,
                    now,
                    enrollment.id,
                    touch.id,
                    {"step": touch.step_id, "reason": reason},
                )
            ],
        )
        if enrollment.state == "active":
            sequence = await self.engine._sequence_for(s, enrollment)
            prospect = (await pq.get_prospects(s, [touch.prospect_id]))[touch.prospect_id]
            await self.engine.planner.plan(s, sequence, [(enrollment, prospect, now)], now)

    async def _unknown(
        self,
        s: AsyncSession,
        touch: Touch,
        enrollment: Enrollment,
        prepared: Prepared,
        words: str,
        now: datetime,
    ) -> UnknownOutcome:
        """The connection died after DATA: maybe delivered. Never resent silently: the
        mailbox's policy decides."""
        box = self.mailboxes.box(prepared.mailbox)
        policy = box.limits.unknown_outcome if box else UnknownOutcome.HOLD
        await settle_unknown(s, touch, enrollment, policy, words, now)
        return policy

    async def recheck_unknown(self, grace: timedelta = SENT_FOLDER_GRACE) -> int:
        """For mailboxes with `unknown_outcome: check_sent_folder`: look up each recent
        `unknown` touch in the Sent folder once the provider has had time to file its copy.
        Returns how many were settled."""
        engine = self.engine
        now = engine.now()
        async with engine.db.transaction() as s:
            candidates = await tq.unknown_between(s, now - timedelta(hours=24), now - grace)
        settled = 0
        for touch_id, mailbox, found_id in candidates:
            box = self.mailboxes.box(mailbox)
            if box is None or box.limits.unknown_outcome is not UnknownOutcome.CHECK_SENT_FOLDER:
                continue
            outcome = await self._check_sent_folder(touch_id, mailbox, found_id)
            settled += outcome is not Outcome.UNKNOWN
        return settled

    async def _check_sent_folder(self, touch_id: int, mailbox: str, message_id: str) -> Outcome:
        """Look for the Message-ID in the mailbox's Sent folder: found means sent; not found
        means it never left, so it goes out again; no answer keeps it `unknown` for a human."""
        box = self.mailboxes.box(mailbox)
        if box is None or box.imap is None:
            return Outcome.UNKNOWN
        folder = box.imap.sent_folder or "Sent"
        try:
            found = await find_message_id(imap_settings(box), folder, message_id, name=box.address)
        except (ConfigError, MailboxUnavailable) as exc:
            log.warning("cannot check the Sent folder of %s: %s", box.address, exc)
            return Outcome.UNKNOWN
        async with self.engine.db.transaction() as s:
            now = self.engine.now()
            touch = await tq.get_touch(s, touch_id, lock=True)
            if touch is None or touch.state != TouchState.UNKNOWN.value:
                return Outcome.UNKNOWN
            if found:
                await self.engine.confirm_sent(
                    s,
                    touch.id,
                    now,
                    {"message_id": message_id, "mailbox": mailbox, "confirmed": f"in {folder}"},
                )
                return Outcome.SENT
            await tq.reschedule(s, touch.id, now, now)
            return Outcome.DEFERRED

    async def _save_to_sent(self, prepared: Prepared) -> None:
        """Keep a copy in the Sent folder for servers that don't (best effort: the email went
        out either way)."""
        box = self.mailboxes.box(prepared.mailbox)
        if box is None or box.imap is None or not box.imap.save_to_sent:
            return
        try:
            await append_message(
                imap_settings(box),
                box.imap.sent_folder or "Sent",
                prepared.message,
                name=box.address,
            )
        except (ConfigError, MailboxUnavailable) as exc:
            log.warning("could not save a copy to the Sent folder of %s: %s", box.address, exc)

    async def _mailbox_down(self, prepared: Prepared, reason: str) -> Outcome:
        """Nothing was sent: the touch waits, the mailbox is marked unhealthy; nothing fails."""
        async with self.engine.db.transaction() as s:
            now = self.engine.now()
            touch = await tq.get_touch(s, prepared.touch_id, lock=True)
            assert touch is not None
            await tq.set_attempts(s, touch.id, max(touch.attempts - 1, 0))
            await tq.reschedule(s, touch.id, now + MAILBOX_BACKOFF, now)
            await tq.set_touch_state(s, [touch.id], TouchState.SCHEDULED, now, error=reason)
            await mq.mailbox_state(s, prepared.mailbox, now)
            await mq.update_mailbox(
                s,
                prepared.mailbox,
                now,
                healthy=False,
                status_note=reason,
                paused_until=now + MAILBOX_BACKOFF,
            )
        log.warning("mailbox %s unavailable: %s", prepared.mailbox, reason)
        return Outcome.MAILBOX_DOWN

    async def _reschedule(self, s: AsyncSession, touch: Touch, at: datetime, now: datetime) -> None:
        await tq.reschedule(s, touch.id, at, now)


def _step(sequence: Sequence, step_id: str) -> Step | None:
    for step in sequence.steps:
        if step.id == step_id:
            return step
    return None


def _first_email(sequence: Sequence, step: Step) -> bool:
    """No email step comes before ``step``: nothing can have been sent for it to thread
    under (later steps are only planned once this one is done)."""
    for earlier in sequence.steps:
        if earlier.id == step.id:
            return True
        if earlier.channel is Channel.EMAIL:
            return False
    return True


async def settle_unknown(
    s: AsyncSession,
    touch: Touch,
    enrollment: Enrollment,
    policy: UnknownOutcome,
    reason: str,
    now: datetime,
) -> None:
    """Record that an email may or may not have arrived, and apply the mailbox's policy:
    `resend` plans it again (same Message-ID, so if both copies arrive, mail clients show one);
    `hold` and `check_sent_folder` leave it for a human or the Sent-folder check."""
    await tq.set_touch_state(s, [touch.id], TouchState.UNKNOWN, now, error=reason, completed=True)
    await add_events(
        s,
        [
            NewEvent(
                touch.prospect_id,
                EventKind.UNKNOWN,
                now,
                enrollment.id,
                touch.id,
                {"step": touch.step_id, "reason": reason, "policy": policy.value},
            )
        ],
    )
    if policy is UnknownOutcome.RESEND:
        await tq.reschedule(s, touch.id, now, now)
