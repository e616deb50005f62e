"""Rep tasks as an iCalendar (RFC 5545) file that Outlook and Google Calendar can import."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

PRODID = "-//Sequencer//Tasks//EN"
#: How long before a task its reminder pops up.
ALARM_MINUTES = 10
_MAX_OCTETS = 75  # RFC 5545 3.1: content lines SHOULD NOT be longer, excluding the CRLF
_CRLF = "\r\n"
# Every line break Python knows: a stray U+2028 from a web form must still become "\n".
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Unicode categories TEXT cannot carry: controls, and lone surrogates (no UTF-8 form).
_DROP = frozenset({"Cc", "Cs"})
# Printable ASCII except space: kept as is in URIs; everything else is percent-encoded.
_URI_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True)
class CalendarTask:
    """One rep task (a call, a LinkedIn touch) to put on the rep's calendar."""

    uid: str  # stable across exports, so re-importing updates instead of duplicating
    title: str
    description: str
    due: datetime  # aware
    duration_minutes: int = 15
    url: str | None = None
    organizer: str | None = None  # the rep's email address


def escape_text(value: str) -> str:
    """Escape a TEXT value (RFC 5545 3.3.11): backslash, semicolon, comma and newlines.

    Control characters other than tab are dropped (the grammar forbids them in TEXT), and so
    are lone surrogates, which have no UTF-8 form.
    """
    text = _LINE_BREAKS.sub("\n", value)
    text = "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) not in _DROP)
    text = text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return text.replace("\n", "\\n")


def _uri(value: str) -> str:
    # A URI value is not escaped like TEXT, so anything that could end the line (or is not
    # ASCII) is percent-encoded; a CR/LF in a prospect's LinkedIn URL cannot add properties.
    return quote(value.strip(), safe=_URI_SAFE, errors="replace")


def fold(line: str) -> str:
    """Fold one content line into pieces of at most 75 UTF-8 octets joined by CRLF + space.

    Splits only between characters, never inside a multi-byte UTF-8 sequence.
    """
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    limit = _MAX_OCTETS
    for ch in line:
        width = len(ch.encode("utf-8", "replace"))
        if size + width > limit:
            pieces.append("".join(current))
            # Continuation lines start with one space, which counts towards their 75 octets.
            current, size, limit = [], 0, _MAX_OCTETS - 1
        current.append(ch)
        size += width
    pieces.append("".join(current))
    return (_CRLF + " ").join(pieces)


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")


def format_utc(moment: datetime) -> str:
    """``moment`` in UTC as an iCalendar DATE-TIME: ``YYYYMMDDTHHMMSSZ``."""
    _require_aware(moment, "datetime")
    t = moment.astimezone(UTC)
    # Formatted by hand: strftime("%Y") does not zero-pad years before 1000 on every platform.
    return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"


def _event_lines(task: CalendarTask, stamp: str) -> list[str]:
    _require_aware(task.due, f"due time of task {task.uid!r}")
    if task.duration_minutes <= 0:
        raise ValueError(
            f"task {task.uid!r} has duration {task.duration_minutes} minutes; it must be positive"
        )
    start = task.due.astimezone(UTC).replace(microsecond=0)
    end = start + timedelta(minutes=task.duration_minutes)
    lines = [
        "BEGIN:VEVENT",
        f"UID:{escape_text(task.uid)}",
        f"DTSTAMP:{stamp}",
        f"DTSTART:{format_utc(start)}",
        f"DTEND:{format_utc(end)}",
        f"SUMMARY:{escape_text(task.title)}",
        f"DESCRIPTION:{escape_text(task.description)}",
    ]
    if task.url and task.url.strip():
        lines.append(f"URL:{_uri(task.url)}")
    if task.organizer and task.organizer.strip():
        address = task.organizer.strip()
        if address[:7].lower() == "mailto:":
            address = address[7:]
        lines.append(f"ORGANIZER:mailto:{_uri(address)}")
    lines += [
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        # DISPLAY alarms must carry a DESCRIPTION; the title is what the rep needs to see.
        f"DESCRIPTION:{escape_text(task.title)}",
        f"TRIGGER:-PT{ALARM_MINUTES}M",
        "END:VALARM",
        "END:VEVENT",
    ]
    return lines


def render_ics(
    tasks: Sequence[CalendarTask], *, generated_at: datetime, calendar_name: str = "Sequencer tasks"
) -> str:
    """Render ``tasks`` as one VCALENDAR with a VEVENT (and a 10-minute reminder) per task.

    VEVENT rather than VTODO because Google Calendar ignores VTODO. All times are written in
    UTC, so no VTIMEZONE is needed. Lines are folded at 75 octets and end with CRLF.
    ``generated_at`` becomes every DTSTAMP. Raises ``ValueError`` for naive datetimes, a
    non-positive duration, or an empty or repeated UID (calendars merge events by UID).
    An empty ``tasks`` gives a calendar without events; callers may prefer to say so instead.
    """
    _require_aware(generated_at, "generated_at")
    stamp = format_utc(generated_at)
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text(calendar_name)}",
    ]
    seen: set[str] = set()
    for task in tasks:
        if not task.uid.strip():
            raise ValueError(f"task {task.title!r} has an empty uid")
        if task.uid in seen:
            raise ValueError(f"two tasks share the uid {task.uid!r}")
        seen.add(task.uid)
        lines += _event_lines(task, stamp)
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + _CRLF for line in lines)
