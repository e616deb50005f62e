"""The demo's inbound messages are what they claim to be, and its checks can fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from sequencer.catalog import Project, load_catalog
from sequencer.core.inbound import InboundKind, classify
from sequencer.core.problems import Severity
from sequencer.core.states import EventKind
from sequencer.mail.capture import Captured
from sequencer.runtime import demo_checks
from sequencer.runtime.demo_story import STORY, Beat, Reaction, render

AT = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)
KINDS = {
    Reaction.REPLY: InboundKind.REPLY,
    Reaction.OUT_OF_OFFICE: InboundKind.OUT_OF_OFFICE,
    Reaction.BOUNCE: InboundKind.BOUNCE,
    Reaction.UNSUBSCRIBE: InboundKind.UNSUBSCRIBE,
}


def sent_to(recipient: str, message_id: str = "<m1.abc@northwind.example>") -> Captured:
    message = EmailMessage()
    message["From"] = "Ana Reyes <ana.reyes@northwind.example>"
    message["To"] = recipient
    message["Subject"] = "Labor forecasting at your warehouses"
    message["Date"] = "Tue, 03 Mar 2026 09:00:00 -0500"
    message["Message-ID"] = message_id
    message.set_content("Hi,\n\nOne idea for peak season.\n\nAna\n")
    data = bytes(message).replace(b"\n", b"\r\n")
    return Captured("ana.reyes@northwind.example", (recipient,), data, AT)


@pytest.mark.parametrize("beat", STORY, ids=lambda b: f"{b.reaction}-{b.prospect}")
def test_each_story_message_is_classified_as_the_story_says(beat: Beat) -> None:
    original = sent_to(beat.prospect)
    raw = render(beat, original, "Pat Example", AT)
    result = classify(raw, today=AT.date(), our_domains=["northwind.example"])
    assert result.kind is KINDS[beat.reaction], result.reason
    if beat.reaction is Reaction.BOUNCE:
        assert result.permanent is True
        assert result.recipients == (beat.prospect,)
        assert result.original_message_id == original.message_id
    else:
        assert original.message_id in result.in_reply_to
    if beat.reaction is Reaction.OUT_OF_OFFICE:
        assert result.return_date == (AT + timedelta(days=beat.away_days)).date()


def test_the_story_has_one_of_each_inbound_kind() -> None:
    assert {beat.reaction for beat in STORY} == set(Reaction)


@dataclass(frozen=True)
class Event:
    at: datetime
    email: str
    kind: str
    sequence: str | None = "cold-outbound"
    data: dict[str, Any] = field(default_factory=dict)


def test_sent_once_fails_on_a_repeated_message_id() -> None:
    one = sent_to("a@x.example")
    assert demo_checks.sent_once([(AT, one)], 1).ok
    assert not demo_checks.sent_once([(AT, one), (AT, one)], 2).ok
    assert not demo_checks.sent_once([(AT, one)], 2).ok  # recorded but never arrived


def test_nothing_after_a_stop_fails_on_a_late_email() -> None:
    story = [Event(AT, "a@x.example", EventKind.REPLIED)]
    before = (AT - timedelta(hours=1), sent_to("a@x.example"))
    after = (AT + timedelta(hours=1), sent_to("a@x.example", "<m2@northwind.example>"))
    assert demo_checks.nothing_after_a_stop([before], story).ok
    assert not demo_checks.nothing_after_a_stop([before, after], story).ok


def test_no_repeats_fails_when_a_template_goes_twice_to_one_prospect() -> None:
    first = Event(AT, "a@x.example", EventKind.SENT, data={"template": "value-tip"})
    other = Event(AT, "b@x.example", EventKind.SENT, data={"template": "value-tip"})
    assert demo_checks.no_repeats([first, other]).ok
    assert not demo_checks.no_repeats([first, first]).ok


def test_inside_windows_fails_on_a_saturday_send() -> None:
    root = Path(__file__).resolve().parents[2]
    catalog = load_catalog(
        Project(root, root / "sequences", root / "templates", root / "sequencer.yaml")
    )
    assert not [p for p in catalog.problems if p.severity is Severity.ERROR]
    sequences = catalog.sequences
    weekday = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)  # Tuesday 10:00 in New York
    saturday = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    zones = {"a@x.example": "America/New_York"}
    ok = [Event(weekday, "a@x.example", EventKind.SENT, data={"step": "intro"})]
    bad = [Event(saturday, "a@x.example", EventKind.SENT, data={"step": "intro"})]
    assert demo_checks.inside_windows(ok, sequences, zones).ok
    assert not demo_checks.inside_windows(bad, sequences, zones).ok
    assert date(2026, 3, 7).weekday() == 5
