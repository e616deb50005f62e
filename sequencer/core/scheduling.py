"""What an enrollment does next and when: the next step after an edit-safe walk, its due time."""

from __future__ import annotations

import functools
from collections.abc import Sequence as Seq
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sequencer.core.calendar import HolidayCalendar, add_delay, plan_send_time
from sequencer.core.delays import Delay
from sequencer.core.model import Sequence, Step


@functools.lru_cache(maxsize=64)
def holiday_calendar(codes: tuple[str, ...]) -> HolidayCalendar:
    return HolidayCalendar(codes)


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def schedule_zone(sequence: Sequence, prospect_timezone: str | None) -> ZoneInfo:
    """The zone a prospect's touches are planned in; a zone the database no longer knows
    falls back to the sequence's fallback rather than stopping the enrollment."""
    name = sequence.schedule.zone_name_for(prospect_timezone or None)
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return _zone(sequence.schedule.fallback_timezone)


def next_step(sequence: Sequence, done: Seq[str]) -> tuple[int, Step] | None:
    """The step to plan after the steps in ``done`` (every step that already has a touch, in
    the order they happened), against the sequence as it is now.

    After an edit: a step that was done is never planned again; a step that was removed is
    skipped; a new step is planned when it comes after the last done step that still exists
    (new steps before it are in the enrollment's past and are skipped)."""
    done_set = set(done)
    ids = [step.id for step in sequence.steps]
    anchor = -1
    for step_id in reversed(done):
        if step_id in ids:
            anchor = ids.index(step_id)
            break
    for index in range(anchor + 1, len(sequence.steps)):
        step = sequence.steps[index]
        if step.id not in done_set:
            return index, step
    return None


def due_time(
    sequence: Sequence,
    step: Step,
    *,
    after: datetime,
    prospect_timezone: str | None,
    previous: Seq[datetime] = (),
) -> datetime:
    """When ``step`` goes out if the previous touch completed at ``after``: its delay counted
    from then, inside the prospect's window, respecting the nuisance limits."""
    zone = schedule_zone(sequence, prospect_timezone)
    schedule = sequence.schedule
    holidays = holiday_calendar(schedule.holidays)
    earliest = add_delay(after.astimezone(zone), step.delay, zone, schedule.window, holidays)
    return plan_send_time(
        earliest,
        zone=zone,
        window=schedule.window,
        holidays=holidays,
        previous=previous,
        limits=sequence.limits,
        anytime=step.anytime,
    )


def resume_time(
    sequence: Sequence,
    step: Step,
    *,
    now: datetime,
    planned: datetime,
    prospect_timezone: str | None,
    previous: Seq[datetime] = (),
) -> datetime:
    """When a touch planned for ``planned`` goes out after a pause that ends at ``now``: never
    before it was planned, never in a burst, always inside the window."""
    zone = schedule_zone(sequence, prospect_timezone)
    schedule = sequence.schedule
    return plan_send_time(
        max(now, planned).astimezone(zone),
        zone=zone,
        window=schedule.window,
        holidays=holiday_calendar(schedule.holidays),
        previous=previous,
        limits=sequence.limits,
        anytime=step.anytime,
    )


def expiry_time(
    sequence: Sequence, due: datetime, expire_after: Delay, prospect_timezone: str | None
) -> datetime:
    """When an open task that was due at ``due`` moves on by itself."""
    zone = schedule_zone(sequence, prospect_timezone)
    schedule = sequence.schedule
    return add_delay(
        due.astimezone(zone),
        expire_after,
        zone,
        schedule.window,
        holiday_calendar(schedule.holidays),
    )
