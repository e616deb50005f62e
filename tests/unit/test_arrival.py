"""When an inbound message reached the mailbox, read from its headers (reply-to-stop latency)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from sequencer.core.arrival import arrival_time

NOW = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)


def test_the_top_received_stamp_wins_over_older_hops_and_the_date() -> None:
    raw = (
        b"Received: from relay.globex.example by mx.northwind.example with ESMTPS id a1;\r\n"
        b"\tTue, 3 Mar 2026 14:59:18 +0000\r\n"
        b"Received: from laptop by relay.globex.example; Tue, 3 Mar 2026 09:58:00 -0500\r\n"
        b"Date: Tue, 3 Mar 2026 09:50:00 -0500\r\n"
        b"Subject: Re: hello\r\n"
        b"\r\n"
        b"Received: not a header, this is the body; Tue, 3 Mar 2026 01:00:00 +0000\r\n"
    )
    assert arrival_time(raw, NOW) == datetime(2026, 3, 3, 14, 59, 18, tzinfo=UTC)


def test_without_a_received_stamp_the_date_is_used() -> None:
    raw = b"From: a@b.example\nDate: Tue, 3 Mar 2026 09:50:00 -0500\n\nhi\n"
    assert arrival_time(raw, NOW) == datetime(2026, 3, 3, 14, 50, tzinfo=UTC)


def test_an_unreadable_stamp_falls_back_to_the_date() -> None:
    raw = b"Received: from x by y; yesterday-ish\r\nDate: Tue, 3 Mar 2026 14:00:00 +0000\r\n\r\n"
    assert arrival_time(raw, NOW) == datetime(2026, 3, 3, 14, 0, tzinfo=UTC)


def test_a_clock_ahead_counts_as_now_and_an_ancient_stamp_is_not_believed() -> None:
    ahead = b"Date: Tue, 3 Mar 2026 16:00:00 +0000\r\n\r\n"
    assert arrival_time(ahead, NOW) == NOW
    ancient = b"Date: Thu, 1 Jan 1970 00:00:00 +0000\r\n\r\n"
    assert arrival_time(ancient, NOW) is None
    assert arrival_time(b"Subject: no dates at all\r\n\r\n", NOW) is None


def test_minus_zero_zone_is_utc() -> None:
    raw = b"Date: Tue, 3 Mar 2026 14:00:00 -0000\r\n\r\n"
    assert arrival_time(raw, NOW) == datetime(2026, 3, 3, 14, 0, tzinfo=UTC)


@given(st.binary(max_size=2000))
def test_never_raises_and_never_later_than_now(raw: bytes) -> None:
    moment = arrival_time(raw, NOW)
    assert moment is None or NOW - timedelta(days=366) <= moment <= NOW
