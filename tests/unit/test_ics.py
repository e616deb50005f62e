"""Tests for the iCalendar export: structure, escaping, folding and UTC times."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequencer.core.ics import CalendarTask, escape_text, fold, format_utc, render_ics

NY = ZoneInfo("America/New_York")
GENERATED = datetime(2024, 3, 1, 8, 30, 15, tzinfo=UTC)
DUE = datetime(2024, 3, 4, 10, 0, tzinfo=NY)  # 15:00 UTC (EST, before the DST switch)


def task(**changes: Any) -> CalendarTask:
    base = CalendarTask(
        uid="task-42@sequencer",
        title="Call Dana Kim (Acme)",
        description="Hi Dana,\nquick call about onboarding.",
        due=DUE,
    )
    return replace(base, **changes)


# --- a tiny reader, independent of the writer -----------------------------------------------


def unfold(text: str) -> list[str]:
    """Content lines with folds undone (RFC 5545 3.1: CRLF followed by one space or tab)."""
    assert text.endswith("\r\n")
    return re.sub(r"\r\n[ \t]", "", text).split("\r\n")[:-1]


def unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars)
        out.append("\n" if nxt in "nN" else nxt)
    return "".join(out)


def components(text: str) -> list[tuple[str, dict[str, str]]]:
    """Each component (VCALENDAR, VEVENT, VALARM) with its own properties, in order."""
    stack: list[tuple[str, dict[str, str]]] = []
    done: list[tuple[str, dict[str, str]]] = []
    for line in unfold(text):
        name, _, value = line.partition(":")
        if name == "BEGIN":
            stack.append((value, {}))
        elif name == "END":
            component = stack.pop()
            assert component[0] == value
            done.append(component)
        else:
            assert name not in stack[-1][1], f"repeated {name}"
            stack[-1][1][name] = value
    assert not stack
    return done


def events(text: str) -> list[dict[str, str]]:
    return [props for kind, props in components(text) if kind == "VEVENT"]


# --- structure ------------------------------------------------------------------------------


def test_calendar_structure() -> None:
    text = render_ics([task()], generated_at=GENERATED)
    lines = unfold(text)
    assert lines[0] == "BEGIN:VCALENDAR"
    assert lines[-1] == "END:VCALENDAR"
    found = components(text)
    assert [kind for kind, _ in found] == ["VALARM", "VEVENT", "VCALENDAR"]
    calendar = found[-1][1]
    assert calendar == {
        "VERSION": "2.0",
        "PRODID": "-//Sequencer//Tasks//EN",
        "CALSCALE": "GREGORIAN",
        "METHOD": "PUBLISH",
        "X-WR-CALNAME": "Sequencer tasks",
    }
    alarm = found[0][1]
    assert alarm == {
        "ACTION": "DISPLAY",
        "DESCRIPTION": "Call Dana Kim (Acme)",
        "TRIGGER": "-PT10M",
    }
    assert "VTODO" not in text


def test_event_properties() -> None:
    (event,) = events(render_ics([task()], generated_at=GENERATED))
    assert event == {
        "UID": "task-42@sequencer",
        "DTSTAMP": "20240301T083015Z",
        "DTSTART": "20240304T150000Z",
        "DTEND": "20240304T151500Z",
        "SUMMARY": "Call Dana Kim (Acme)",
        "DESCRIPTION": "Hi Dana\\,\\nquick call about onboarding.",
    }


def test_optional_url_and_organizer() -> None:
    text = render_ics(
        [task(url="https://www.linkedin.com/in/dana-kim", organizer="rep@acme.com")],
        generated_at=GENERATED,
    )
    (event,) = events(text)
    assert event["URL"] == "https://www.linkedin.com/in/dana-kim"
    assert event["ORGANIZER"] == "mailto:rep@acme.com"
    (event,) = events(render_ics([task(organizer="MAILTO:rep@acme.com")], generated_at=GENERATED))
    assert event["ORGANIZER"] == "mailto:rep@acme.com"


def test_url_cannot_inject_properties() -> None:
    text = render_ics(
        [task(url="https://x.test/a b\r\nATTENDEE:mailto:evil@x.test", organizer="r@x.test\n")],
        generated_at=GENERATED,
    )
    (event,) = events(text)
    assert "ATTENDEE" not in event
    assert event["URL"] == "https://x.test/a%20b%0D%0AATTENDEE:mailto:evil@x.test"
    assert event["ORGANIZER"] == "mailto:r@x.test"


def test_one_event_per_task_in_order() -> None:
    tasks = [task(uid=f"task-{n}@sequencer", due=DUE + timedelta(hours=n)) for n in range(3)]
    found = events(render_ics(tasks, generated_at=GENERATED))
    assert [e["UID"] for e in found] == ["task-0@sequencer", "task-1@sequencer", "task-2@sequencer"]
    assert [e["DTSTART"] for e in found] == [
        "20240304T150000Z",
        "20240304T160000Z",
        "20240304T170000Z",
    ]


def test_no_tasks_gives_an_empty_calendar() -> None:
    text = render_ics([], generated_at=GENERATED, calendar_name="Week 10")
    assert [kind for kind, _ in components(text)] == ["VCALENDAR"]
    assert "X-WR-CALNAME:Week 10\r\n" in text


# --- times ----------------------------------------------------------------------------------


def test_times_are_utc() -> None:
    summer = datetime(2024, 7, 1, 9, 0, 59, 999_999, tzinfo=NY)  # EDT, UTC-4
    (event,) = events(
        render_ics(
            [task(due=summer, duration_minutes=90)],
            generated_at=datetime(2024, 6, 30, 23, 0, tzinfo=ZoneInfo("Europe/Berlin")),
        )
    )
    assert event["DTSTART"] == "20240701T130059Z"
    assert event["DTEND"] == "20240701T143059Z"
    assert event["DTSTAMP"] == "20240630T210000Z"


def test_format_utc() -> None:
    assert format_utc(datetime(5, 1, 2, 3, 4, 5, tzinfo=UTC)) == "00050102T030405Z"


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="generated_at"):
        render_ics([task()], generated_at=datetime(2024, 3, 1, 8, 30))
    with pytest.raises(ValueError, match="task-42@sequencer"):
        render_ics([task(due=datetime(2024, 3, 4, 10, 0))], generated_at=GENERATED)


@pytest.mark.parametrize("minutes", [0, -15])
def test_duration_must_be_positive(minutes: int) -> None:
    with pytest.raises(ValueError, match="duration"):
        render_ics([task(duration_minutes=minutes)], generated_at=GENERATED)


def test_uids_must_be_present_and_unique() -> None:
    with pytest.raises(ValueError, match="empty uid"):
        render_ics([task(uid=" ")], generated_at=GENERATED)
    with pytest.raises(ValueError, match="share the uid"):
        render_ics([task(), task()], generated_at=GENERATED)


# --- escaping and folding -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a,b;c\\d", "a\\,b\\;c\\\\d"),
        ("one\ntwo", "one\\ntwo"),
        ("one\r\ntwo\rthree", "one\\ntwo\\nthree"),
        ("one\u2028two", "one\\ntwo"),
        ("tab\there", "tab\there"),
        ("bell\x07 nul\x00", "bell nul"),
        ("colon: fine", "colon: fine"),
    ],
)
def test_escape_text(text: str, escaped: str) -> None:
    assert escape_text(text) == escaped


def assert_well_formed(text: str) -> None:
    assert text.endswith("\r\n")
    raw_lines = text.split("\r\n")[:-1]
    assert not any("\r" in line or "\n" in line for line in raw_lines)
    for line in raw_lines:
        assert len(line.encode("utf-8")) <= 75, line


def test_long_lines_fold_at_75_octets_without_splitting_characters() -> None:
    description = "Ünïcödé 🎉 résumé, 日本語のテキスト; " * 12
    text = render_ics([task(description=description)], generated_at=GENERATED)
    assert_well_formed(text)
    raw_lines = text.split("\r\n")[:-1]
    assert any(line.startswith(" ") for line in raw_lines)
    # A byte-oriented reader splitting at CRLF must get whole UTF-8 characters on every line.
    for chunk in text.encode("utf-8").split(b"\r\n"):
        chunk.decode("utf-8")
    (event,) = events(text)
    assert unescape(event["DESCRIPTION"]) == description


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_fold_fills_lines_up_to_the_limit(width: int) -> None:
    char = {1: "a", 2: "é", 3: "日", 4: "🎉"}[width]
    line = "DESCRIPTION:" + char * 200
    folded = fold(line)
    pieces = folded.split("\r\n")
    assert "".join(p.removeprefix(" ") if i else p for i, p in enumerate(pieces)) == line
    assert all(p.startswith(" ") for p in pieces[1:])
    for piece in pieces[:-1]:
        size = len(piece.encode("utf-8"))
        assert 75 - width < size <= 75  # full, short only by a character that did not fit


def test_short_lines_are_not_folded() -> None:
    assert fold("X" * 75) == "X" * 75
    assert fold("X" * 76) == "X" * 75 + "\r\n X"
    assert fold("") == ""


def test_round_trip_with_awkward_text() -> None:
    title = "Call Dana; ask about Q3, budget \\ timing 🚀"
    description = "Hi Dana,\n\nWe spoke; next steps:\n- pricing, terms\n- 🎉 kickoff\\done\n"
    name = "Dana's week; calls, emails"
    text = render_ics(
        [task(title=title, description=description)], generated_at=GENERATED, calendar_name=name
    )
    assert_well_formed(text)
    found = components(text)
    assert unescape(found[-1][1]["X-WR-CALNAME"]) == name
    (event,) = events(text)
    assert unescape(event["SUMMARY"]) == title
    assert unescape(event["DESCRIPTION"]) == description


TEXT = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")),
        st.sampled_from("\n,;\\:\t é日🎉"),
    )
)


@given(TEXT, TEXT, st.integers(min_value=1, max_value=600))
def test_round_trip_property(title: str, description: str, minutes: int) -> None:
    text = render_ics(
        [task(title=title, description=description, duration_minutes=minutes)],
        generated_at=GENERATED,
    )
    assert_well_formed(text)
    (event,) = events(text)
    assert unescape(event["SUMMARY"]) == title
    assert unescape(event["DESCRIPTION"]) == description
    start = datetime.strptime(event["DTSTART"], "%Y%m%dT%H%M%SZ")
    end = datetime.strptime(event["DTEND"], "%Y%m%dT%H%M%SZ")
    assert end - start == timedelta(minutes=minutes)
