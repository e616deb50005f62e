"""The last check before SMTP, and retry timing: may this touch go out now, and if not, when?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sequencer.core.calendar import (
    HolidayCalendar,
    earliest_after_limits,
    is_sendable,
    next_send_time,
)
from sequencer.core.model import Limits, SendWindow

DAY = timedelta(hours=24)
MAX_RETRY_DELAY = timedelta(hours=6)


class Verdict(StrEnum):
    SEND = "send"
    LATER = "later"  # move to ``at``: a window, a cap or a pause is in the way
    CANCEL = "cancel"  # the enrollment ended or the prospect is suppressed
    WAIT = "wait"  # the enrollment is paused: leave the touch as it is


@dataclass(frozen=True)
class SendCheck:
    verdict: Verdict
    reason: str
    at: datetime | None = None  # for LATER


@dataclass(frozen=True)
class SendContext:
    """Everything the check needs, read under lock by the sender."""

    now: datetime
    enrollment_state: str
    suppressed_by: str | None  # the suppression entry, when the address is suppressed
    zone: ZoneInfo
    window: SendWindow
    holidays: HolidayCalendar
    anytime: bool
    prospect_contacts: Sequence[datetime]  # other touches to this prospect, any sequence
    limits: Limits
    mailbox_paused_until: datetime | None
    mailbox_sends: Sequence[datetime]  # this mailbox's sends in the last 24 hours
    daily_cap: int
    last_sent_at: datetime | None
    min_spacing: timedelta
    company_sends: Sequence[datetime]  # sends to the same company in the last 24 hours
    company_limit: int | None


def _over(times: Sequence[datetime], cap: int, now: datetime) -> datetime | None:
    """When a rolling 24-hour cap frees up again, or None when there is room now."""
    recent = sorted(t for t in times if t > now - DAY)
    if len(recent) < cap:
        return None
    return recent[len(recent) - cap] + DAY


def check_send(c: SendContext) -> SendCheck:
    """Decide whether a due touch may go out now. Anything over a limit moves to the next
    moment it fits, inside the window; nothing is dropped."""
    if c.enrollment_state == "paused":
        return SendCheck(Verdict.WAIT, "the enrollment is paused")
    if c.enrollment_state != "active":
        return SendCheck(Verdict.CANCEL, f"the enrollment is {c.enrollment_state}")
    if c.suppressed_by:
        return SendCheck(Verdict.CANCEL, f"suppressed: {c.suppressed_by}")
    waits: list[tuple[datetime, str]] = []
    if c.mailbox_paused_until and c.mailbox_paused_until > c.now:
        waits.append((c.mailbox_paused_until, "the mailbox is paused"))
    freed = _over(c.mailbox_sends, c.daily_cap, c.now)
    if freed:
        waits.append((freed, f"the mailbox's daily cap of {c.daily_cap} is reached"))
    if c.last_sent_at and c.last_sent_at + c.min_spacing > c.now:
        waits.append((c.last_sent_at + c.min_spacing, "spacing between sends from the mailbox"))
    if c.company_limit is not None:
        freed = _over(c.company_sends, c.company_limit, c.now)
        if freed:
            waits.append((freed, f"{c.company_limit} emails to this company in 24 hours"))
    allowed = earliest_after_limits(
        c.now, c.prospect_contacts, c.limits, c.zone, c.window, c.holidays
    )
    if allowed > c.now:
        waits.append((allowed, "the prospect's minimum gap or weekly maximum"))
    if not c.anytime and not is_sendable(c.now, c.zone, c.window, c.holidays):
        waits.append((c.now, "outside the prospect's sending window"))
    if not waits:
        return SendCheck(Verdict.SEND, "ok")
    at, reason = max(waits, key=lambda w: w[0])
    at = max(at, c.now)
    if not c.anytime:
        at = next_send_time(at, c.zone, c.window, c.holidays)
    return SendCheck(Verdict.LATER, reason, at)


def retry_delay(attempt: int, base: timedelta, jitter: float) -> timedelta:
    """Exponential backoff with jitter for temporary failures: ``base * 2**(attempt-1)``
    scaled by ``0.5 + jitter`` (jitter in [0, 1)), at most six hours."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    jitter = min(max(jitter, 0.0), 1.0)
    delay: timedelta = base * (2 ** min(attempt - 1, 16)) * (0.5 + jitter)
    return min(delay, MAX_RETRY_DELAY)
