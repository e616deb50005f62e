"""The demo's promises, checked against what the capture server received: every email sent
once, none after a stop, no email repeated to a prospect, each inside its sending hours."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sequencer.core.calendar import HolidayCalendar, is_sendable
from sequencer.core.model import Sequence
from sequencer.core.states import EventKind
from sequencer.mail.capture import Captured

STOPPING = {EventKind.REPLIED, EventKind.BOUNCED, EventKind.UNSUBSCRIBED}


class StoryEvent(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def email(self) -> str: ...
    @property
    def sequence(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Check:
    """A promise of the engine, checked against what the capture server received."""

    name: str
    ok: bool
    detail: str


def sent_once(sent: list[tuple[datetime, Captured]], recorded: int) -> Check:
    ids = Counter(message.message_id for _, message in sent)
    twice = [mid for mid, n in ids.items() if n > 1]
    ok = not twice and len(sent) == recorded
    return Check(
        "every email sent exactly once",
        ok,
        f"{len(sent)} emails arrived, {recorded} recorded as sent, "
        f"{len(twice)} Message-IDs seen twice",
    )


def nothing_after_a_stop(
    sent: list[tuple[datetime, Captured]], story: Iterable[StoryEvent]
) -> Check:
    stopped: dict[str, datetime] = {}
    for event in story:
        if event.kind in STOPPING and event.email not in stopped:
            stopped[event.email] = event.at
    late = [
        (recipient, at)
        for at, message in sent
        for recipient in message.recipients
        if recipient in stopped and at > stopped[recipient]
    ]
    detail = (
        f"{len(stopped)} prospects stopped (reply, bounce or unsubscribe); "
        f"{len(late)} emails reached them afterwards"
    )
    return Check("no email after a reply, bounce or unsubscribe", not late, detail)


def no_repeats(story: Iterable[StoryEvent]) -> Check:
    seen: dict[str, Counter[str]] = {}
    for event in story:
        if event.kind == EventKind.SENT and event.data.get("template"):
            seen.setdefault(event.email, Counter())[event.data["template"]] += 1
    repeats = sum(1 for counts in seen.values() for n in counts.values() if n > 1)
    rotated = sum(1 for counts in seen.values() for t in counts if t.startswith("value-"))
    return Check(
        "no prospect got the same email twice",
        repeats == 0,
        f"{rotated} value-add emails rotated across {len(seen)} prospects, {repeats} repeats",
    )


def inside_windows(
    story: Iterable[StoryEvent], sequences: Mapping[str, Sequence], zones: Mapping[str, str]
) -> Check:
    checked = outside = 0
    zones_seen: set[str] = set()
    for event in story:
        if event.kind != EventKind.SENT or event.sequence is None:
            continue
        if event.sequence not in sequences:
            continue
        sequence = sequences[event.sequence]
        step = next((s for s in sequence.steps if s.id == event.data.get("step")), None)
        if step is None or getattr(step, "anytime", False):
            continue
        schedule = sequence.schedule
        zone_name = schedule.zone_name_for(zones.get(event.email) or None)
        zone = ZoneInfo(zone_name)
        zones_seen.add(zone_name)
        checked += 1
        if not is_sendable(event.at, zone, schedule.window, HolidayCalendar(schedule.holidays)):
            outside += 1
    return Check(
        "every email inside the prospect's local sending hours",
        outside == 0,
        f"{checked} emails checked in {len(zones_seen)} time zones, across the change to daylight "
        f"saving time, {outside} outside",
    )
