"""Tests for send-time arithmetic: windows, holidays, DST, delays and nuisance limits."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.core.calendar import (
    HolidayCalendar,
    add_delay,
    business_days_between,
    earliest_after_limits,
    holiday_problem,
    is_sendable,
    next_send_time,
    plan_send_time,
    timezone_problem,
)
from sequencer.core.delays import Delay, DelayUnit
from sequencer.core.model import Limits, SendWindow, TimeRange

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LONDON = ZoneInfo("Europe/London")

WEEKDAYS = SendWindow()  # Mon-Fri 09:00-17:00
SPLIT = SendWindow(hours=(TimeRange(time(9), time(12)), TimeRange(time(13), time(17))))
EVERY_DAY = frozenset(range(7))

NO_HOLIDAYS = HolidayCalendar()
US = HolidayCalendar(["US"])
GB = HolidayCalendar(["GB"])
GB_DE = HolidayCalendar(["GB", "DE"])

NO_LIMITS = Limits(min_gap=None, max_per_week=None)


def at(
    zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=zone)


def every_day(start: time, end: time) -> SendWindow:
    return SendWindow(days=EVERY_DAY, hours=(TimeRange(start, end),))


def same_instant(a: datetime, b: datetime) -> bool:
    # Aware datetimes sharing a tzinfo compare by wall clock, so compare in UTC.
    return a.astimezone(UTC) == b.astimezone(UTC)


def offset_hours(moment: datetime) -> float:
    offset = moment.utcoffset()
    assert offset is not None
    return offset.total_seconds() / 3600


# ---------------------------------------------------------------------------
# Windows and holidays


def test_friday_evening_waits_for_monday_morning() -> None:
    result = next_send_time(at(NY, 2026, 3, 13, 18), NY, WEEKDAYS, NO_HOLIDAYS)
    assert result == at(NY, 2026, 3, 16, 9)
    assert result.tzinfo is NY


def test_a_sendable_moment_is_returned_unchanged_in_the_zone() -> None:
    earliest = datetime(2026, 3, 11, 15, 7, 30, tzinfo=UTC)  # 11:07:30 in New York
    result = next_send_time(earliest, NY, WEEKDAYS, NO_HOLIDAYS)
    assert same_instant(result, earliest)
    assert result.tzinfo is NY
    assert result.time() == time(11, 7, 30)


def test_before_the_window_opens_the_same_day() -> None:
    assert next_send_time(at(NY, 2026, 3, 11, 6), NY, WEEKDAYS, NO_HOLIDAYS) == at(
        NY, 2026, 3, 11, 9
    )


def test_window_end_is_exclusive() -> None:
    assert is_sendable(at(NY, 2026, 3, 11, 16, 59, 59), NY, WEEKDAYS, NO_HOLIDAYS)
    assert not is_sendable(at(NY, 2026, 3, 11, 17), NY, WEEKDAYS, NO_HOLIDAYS)
    assert next_send_time(at(NY, 2026, 3, 11, 17), NY, WEEKDAYS, NO_HOLIDAYS) == at(
        NY, 2026, 3, 12, 9
    )


def test_sendability_is_judged_in_the_prospects_zone() -> None:
    # 15:00 UTC on a Wednesday is 10:00 in New York but 00:00 Thursday in Tokyo.
    moment = datetime(2026, 3, 11, 15, tzinfo=UTC)
    assert is_sendable(moment, NY, WEEKDAYS, NO_HOLIDAYS)
    assert not is_sendable(moment, ZoneInfo("Asia/Tokyo"), WEEKDAYS, NO_HOLIDAYS)


def test_thanksgiving_is_skipped() -> None:
    assert US.is_holiday(date(2026, 11, 26))
    assert US.holiday_name(date(2026, 11, 26)) == "Thanksgiving Day"
    assert not is_sendable(at(NY, 2026, 11, 26, 10), NY, WEEKDAYS, US)
    result = next_send_time(at(NY, 2026, 11, 25, 17, 30), NY, WEEKDAYS, US)
    assert result == at(NY, 2026, 11, 27, 9)
    # Without the calendar Thanksgiving is an ordinary Thursday.
    assert next_send_time(at(NY, 2026, 11, 25, 17, 30), NY, WEEKDAYS, NO_HOLIDAYS) == at(
        NY, 2026, 11, 26, 9
    )


def test_christmas_and_boxing_day_in_great_britain() -> None:
    assert GB.holiday_name(date(2026, 12, 25)) == "Christmas Day"
    assert GB.is_holiday(date(2026, 12, 28))  # Boxing Day falls on Saturday, observed Monday
    # Thursday 24 December after hours: Friday and Monday are holidays, the weekend is closed.
    result = next_send_time(at(LONDON, 2026, 12, 24, 17), LONDON, WEEKDAYS, GB)
    assert result == at(LONDON, 2026, 12, 29, 9)


def test_a_single_code_string_is_one_code() -> None:
    assert HolidayCalendar("US").codes == ("US",)


def test_several_countries_combine() -> None:
    assert not US.is_holiday(date(2026, 12, 26))
    both = HolidayCalendar(["us", "gb"])
    assert both.codes == ("US", "GB")
    assert both.is_holiday(date(2026, 11, 26))  # Thanksgiving
    assert both.is_holiday(date(2026, 12, 28))  # Boxing Day observed
    assert both.holiday_name(date(2026, 12, 25)) == "Christmas Day"
    assert both.holiday_name(date(2026, 3, 11)) is None


def test_subdivision_codes_are_normalised() -> None:
    calendar = HolidayCalendar(["de-by", "DE-BY", "us-ca"])
    assert calendar.codes == ("DE-BY", "US-CA")
    assert calendar.is_holiday(date(2026, 1, 6))  # Epiphany is a holiday in Bavaria
    assert not HolidayCalendar(["DE"]).is_holiday(date(2026, 1, 6))
    assert calendar == HolidayCalendar(["US-CA", "DE-BY"])


def test_split_window_skips_lunch() -> None:
    assert is_sendable(at(NY, 2026, 3, 11, 11, 59), NY, SPLIT, NO_HOLIDAYS)
    assert not is_sendable(at(NY, 2026, 3, 11, 12), NY, SPLIT, NO_HOLIDAYS)
    assert next_send_time(at(NY, 2026, 3, 11, 12, 30), NY, SPLIT, NO_HOLIDAYS) == at(
        NY, 2026, 3, 11, 13
    )
    assert next_send_time(at(NY, 2026, 3, 11, 17, 30), NY, SPLIT, NO_HOLIDAYS) == at(
        NY, 2026, 3, 12, 9
    )


def test_window_hours_need_not_be_in_order() -> None:
    window = SendWindow(hours=(TimeRange(time(13), time(17)), TimeRange(time(9), time(12))))
    assert next_send_time(at(NY, 2026, 3, 11, 7), NY, window, NO_HOLIDAYS) == at(NY, 2026, 3, 11, 9)


def test_weekend_only_window() -> None:
    window = SendWindow(days=frozenset({5, 6}), hours=(TimeRange(time(10), time(11)),))
    assert next_send_time(at(NY, 2026, 3, 11, 12), NY, window, NO_HOLIDAYS) == at(
        NY, 2026, 3, 14, 10
    )


def test_empty_windows_are_rejected() -> None:
    earliest = at(NY, 2026, 3, 11, 12)
    with pytest.raises(ValueError, match="no days"):
        next_send_time(earliest, NY, SendWindow(days=frozenset()), NO_HOLIDAYS)
    with pytest.raises(ValueError, match="no hours"):
        next_send_time(earliest, NY, SendWindow(hours=()), NO_HOLIDAYS)
    backwards = SendWindow(hours=(TimeRange(time(17), time(9)),))
    with pytest.raises(ValueError, match="start before"):
        next_send_time(earliest, NY, backwards, NO_HOLIDAYS)


class _EveryDayIsAHoliday(HolidayCalendar):
    def is_holiday(self, day: date) -> bool:
        return True


def test_nothing_sendable_for_years_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing is sendable"):
        next_send_time(at(NY, 2026, 3, 11, 12), NY, WEEKDAYS, _EveryDayIsAHoliday())


# ---------------------------------------------------------------------------
# Daylight saving time


@pytest.mark.parametrize(
    ("zone", "friday", "before", "after"),
    [
        (NY, date(2026, 3, 6), -5, -4),  # spring forward on Sunday 8 March
        (NY, date(2026, 10, 30), -4, -5),  # fall back on Sunday 1 November
        (BERLIN, date(2026, 3, 27), 1, 2),  # spring forward on Sunday 29 March
        (BERLIN, date(2026, 10, 23), 2, 1),  # fall back on Sunday 25 October
    ],
)
def test_monday_morning_stays_nine_across_dst(
    zone: ZoneInfo, friday: date, before: int, after: int
) -> None:
    friday_evening = datetime.combine(friday, time(17), tzinfo=zone)
    assert offset_hours(friday_evening) == before
    result = next_send_time(friday_evening, zone, WEEKDAYS, NO_HOLIDAYS)
    assert result == datetime.combine(friday + timedelta(days=3), time(9), tzinfo=zone)
    assert result.time() == time(9)
    assert offset_hours(result) == after
    planned = plan_send_time(friday_evening, zone=zone, window=WEEKDAYS, holidays=NO_HOLIDAYS)
    assert planned == result


def test_window_starting_in_the_spring_forward_gap_opens_after_the_gap() -> None:
    # New York skips 02:00-03:00 on 8 March 2026; 02:30 never happens that night.
    window = every_day(time(2, 30), time(4))
    result = next_send_time(at(NY, 2026, 3, 8, 0), NY, window, NO_HOLIDAYS)
    assert same_instant(result, datetime(2026, 3, 8, 7, tzinfo=UTC))
    assert result.time() == time(3)
    assert offset_hours(result) == -4
    assert is_sendable(result, NY, window, NO_HOLIDAYS)
    # The day after, 02:30 exists again.
    assert next_send_time(at(NY, 2026, 3, 8, 5), NY, window, NO_HOLIDAYS) == at(
        NY, 2026, 3, 9, 2, 30
    )


def test_berlin_window_starting_in_the_gap() -> None:
    # Berlin skips 02:00-03:00 on 29 March 2026.
    window = every_day(time(2, 30), time(5))
    result = next_send_time(at(BERLIN, 2026, 3, 29, 1), BERLIN, window, NO_HOLIDAYS)
    assert same_instant(result, datetime(2026, 3, 29, 1, tzinfo=UTC))
    assert (result.time(), offset_hours(result)) == (time(3), 2)


def test_window_entirely_inside_the_gap_is_closed_that_day() -> None:
    window = every_day(time(2), time(2, 45))
    result = next_send_time(at(NY, 2026, 3, 8, 0), NY, window, NO_HOLIDAYS)
    assert result == at(NY, 2026, 3, 9, 2)


def test_ambiguous_window_start_uses_the_first_occurrence() -> None:
    # 01:00-02:00 happens twice in New York on 1 November 2026.
    window = every_day(time(1), time(1, 30))
    result = next_send_time(at(NY, 2026, 11, 1, 0), NY, window, NO_HOLIDAYS)
    assert same_instant(result, datetime(2026, 11, 1, 5, tzinfo=UTC))
    assert offset_hours(result) == -4


def test_repeated_hour_opens_the_window_again() -> None:
    window = every_day(time(1), time(1, 30))
    after_first_pass = datetime(2026, 11, 1, 5, 40, tzinfo=UTC)  # 01:40 EDT
    result = next_send_time(after_first_pass, NY, window, NO_HOLIDAYS)
    assert same_instant(result, datetime(2026, 11, 1, 6, tzinfo=UTC))  # 01:00 EST
    assert (result.time(), offset_hours(result)) == (time(1), -5)


def test_fall_back_into_the_middle_of_a_window() -> None:
    # The clock goes from 01:59 EDT back to 01:00 EST, inside 00:30-01:30 again.
    window = every_day(time(0, 30), time(1, 30))
    result = next_send_time(datetime(2026, 11, 1, 5, 45, tzinfo=UTC), NY, window, NO_HOLIDAYS)
    assert same_instant(result, datetime(2026, 11, 1, 6, tzinfo=UTC))


def test_a_touch_planned_across_the_change_keeps_local_time() -> None:
    start = at(BERLIN, 2026, 10, 23, 9)  # Friday, CEST
    due = add_delay(start, Delay(1, DelayUnit.WEEKS), BERLIN, WEEKDAYS, NO_HOLIDAYS)
    assert due == at(BERLIN, 2026, 10, 30, 9)
    assert (offset_hours(start), offset_hours(due)) == (2, 1)
    assert due.astimezone(UTC) - start.astimezone(UTC) == timedelta(weeks=1, hours=1)


# ---------------------------------------------------------------------------
# Delays


def test_three_days_across_dst_keeps_wall_time() -> None:
    start = at(NY, 2026, 3, 6, 9, 12)
    due = add_delay(start, Delay.parse("3 days"), NY, WEEKDAYS, NO_HOLIDAYS)
    assert due == at(NY, 2026, 3, 9, 9, 12)
    assert due.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=71)
    back = add_delay(at(NY, 2026, 10, 30, 9, 12), Delay(3), NY, WEEKDAYS, NO_HOLIDAYS)
    assert (back.time(), offset_hours(back)) == (time(9, 12), -5)


def test_hours_are_elapsed_time() -> None:
    start = at(NY, 2026, 3, 8, 0, 30)  # EST
    due = add_delay(start, Delay.parse("4 hours"), NY, WEEKDAYS, NO_HOLIDAYS)
    assert due.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=4)
    assert due.time() == time(5, 30)  # one hour was skipped
    minutes = add_delay(start, Delay.parse("90 minutes"), NY, WEEKDAYS, NO_HOLIDAYS)
    assert minutes == at(NY, 2026, 3, 8, 3)


def test_immediately_returns_start_in_the_zone() -> None:
    start = datetime(2026, 3, 11, 15, tzinfo=UTC)
    due = add_delay(start, Delay.parse("immediately"), NY, WEEKDAYS, NO_HOLIDAYS)
    assert same_instant(due, start)
    assert due.tzinfo is NY


def test_a_day_later_landing_in_the_gap_moves_past_it() -> None:
    due = add_delay(at(NY, 2026, 3, 7, 2, 30), Delay(1), NY, WEEKDAYS, NO_HOLIDAYS)
    assert same_instant(due, datetime(2026, 3, 8, 7, tzinfo=UTC))
    assert due.time() == time(3)


def test_a_day_later_landing_in_the_repeated_hour_takes_the_first() -> None:
    due = add_delay(at(NY, 2026, 10, 31, 1, 30), Delay(1), NY, WEEKDAYS, NO_HOLIDAYS)
    assert same_instant(due, datetime(2026, 11, 1, 5, 30, tzinfo=UTC))


def test_business_days_skip_the_weekend() -> None:
    thursday = at(NY, 2026, 3, 12, 10, 15)
    due = add_delay(thursday, Delay.parse("2 business days"), NY, WEEKDAYS, NO_HOLIDAYS)
    assert due == at(NY, 2026, 3, 16, 10, 15)


def test_business_days_skip_a_holiday_monday() -> None:
    # Monday 19 January 2026 is Martin Luther King Jr. Day.
    thursday = at(NY, 2026, 1, 15, 10)
    due = add_delay(thursday, Delay(2, DelayUnit.BUSINESS_DAYS), NY, WEEKDAYS, US)
    assert due == at(NY, 2026, 1, 20, 10)


def test_one_business_day_from_saturday_is_monday() -> None:
    saturday = at(NY, 2026, 3, 14, 20, 5)
    due = add_delay(saturday, Delay(1, DelayUnit.BUSINESS_DAYS), NY, WEEKDAYS, NO_HOLIDAYS)
    assert due == at(NY, 2026, 3, 16, 20, 5)


def test_business_days_follow_the_window_days() -> None:
    sun_to_thu = SendWindow(days=frozenset({6, 0, 1, 2, 3}))
    thursday = at(NY, 2026, 3, 12, 10)
    due = add_delay(thursday, Delay(1, DelayUnit.BUSINESS_DAYS), NY, sun_to_thu, NO_HOLIDAYS)
    assert due == at(NY, 2026, 3, 15, 10)


def test_business_days_between() -> None:
    assert business_days_between(date(2026, 3, 12), date(2026, 3, 16), WEEKDAYS, US) == 2
    assert business_days_between(date(2026, 1, 15), date(2026, 1, 20), WEEKDAYS, US) == 2
    assert business_days_between(date(2026, 3, 16), date(2026, 3, 12), WEEKDAYS, US) == 0


# ---------------------------------------------------------------------------
# Limits


def test_min_gap_pushes_the_touch_later() -> None:
    previous = [at(NY, 2026, 3, 9, 10)]
    limits = Limits(min_gap=Delay(1), max_per_week=None)
    earliest = at(NY, 2026, 3, 9, 11)
    result = earliest_after_limits(earliest, previous, limits, NY, WEEKDAYS, NO_HOLIDAYS)
    assert result == at(NY, 2026, 3, 10, 10)
    # Already far enough apart: unchanged.
    later = at(NY, 2026, 3, 11, 8)
    assert earliest_after_limits(later, previous, limits, NY, WEEKDAYS, NO_HOLIDAYS) == later


def test_min_gap_in_business_days_then_window() -> None:
    previous = [at(NY, 2026, 3, 13, 16)]  # Friday afternoon
    limits = Limits(min_gap=Delay(1, DelayUnit.BUSINESS_DAYS), max_per_week=None)
    due = plan_send_time(
        at(NY, 2026, 3, 13, 16, 30),
        zone=NY,
        window=WEEKDAYS,
        holidays=NO_HOLIDAYS,
        previous=previous,
        limits=limits,
    )
    assert due == at(NY, 2026, 3, 16, 16)


def test_max_per_week_waits_until_the_oldest_touch_leaves_the_week() -> None:
    previous = [at(NY, 2026, 3, 11, 10), at(NY, 2026, 3, 9, 10)]  # any order
    limits = Limits(min_gap=None, max_per_week=2)
    earliest = at(NY, 2026, 3, 12, 10)
    result = earliest_after_limits(earliest, previous, limits, NY, WEEKDAYS, NO_HOLIDAYS)
    assert result == at(NY, 2026, 3, 16, 10)
    # One touch a week is fine again exactly seven days on.
    one = Limits(min_gap=None, max_per_week=1)
    week_later = at(NY, 2026, 3, 16, 10)
    assert (
        earliest_after_limits(week_later, previous[1:], one, NY, WEEKDAYS, NO_HOLIDAYS)
        == week_later
    )


def test_max_per_week_counts_a_rolling_week_not_a_calendar_week() -> None:
    previous = [at(NY, 2026, 2, 2, 16), at(NY, 2026, 2, 5, 9)]  # Monday and Thursday
    limits = Limits(min_gap=None, max_per_week=2)
    earliest = at(NY, 2026, 2, 3, 9)  # only Monday's touch is at or before it
    assert earliest_after_limits(earliest, previous, limits, NY, WEEKDAYS, NO_HOLIDAYS) == earliest
    result = earliest_after_limits(
        at(NY, 2026, 2, 6, 9), previous, limits, NY, WEEKDAYS, NO_HOLIDAYS
    )
    assert result == at(NY, 2026, 2, 9, 16)


def test_max_per_week_is_168_elapsed_hours() -> None:
    # Clocks spring forward on 8 March, so 168 hours after 16:00 EST is 17:00 EDT.
    previous = [at(NY, 2026, 3, 6, 16)]
    limits = Limits(min_gap=None, max_per_week=1)
    result = earliest_after_limits(
        at(NY, 2026, 3, 10, 9), previous, limits, NY, WEEKDAYS, NO_HOLIDAYS
    )
    assert result == at(NY, 2026, 3, 13, 17)
    assert result.astimezone(UTC) - previous[0].astimezone(UTC) == timedelta(hours=168)


def test_max_per_week_ignores_touches_after_the_candidate() -> None:
    previous = [at(NY, 2026, 3, 13, 10)]
    limits = Limits(min_gap=None, max_per_week=1)
    earliest = at(NY, 2026, 3, 12, 10)
    assert earliest_after_limits(earliest, previous, limits, NY, WEEKDAYS, NO_HOLIDAYS) == earliest


def test_max_per_week_then_window() -> None:
    # The week is full until Saturday 10:00, which is outside the window: Monday 09:00.
    previous = [at(NY, 2026, 3, 7, 10), at(NY, 2026, 3, 9, 10), at(NY, 2026, 3, 10, 10)]
    due = plan_send_time(
        at(NY, 2026, 3, 11, 10),
        zone=NY,
        window=WEEKDAYS,
        holidays=NO_HOLIDAYS,
        previous=previous,
        limits=Limits(min_gap=Delay(1), max_per_week=3),
    )
    assert due == at(NY, 2026, 3, 16, 9)


def test_anytime_skips_the_window_but_not_the_limits() -> None:
    saturday_night = at(NY, 2026, 3, 14, 23)
    assert (
        plan_send_time(saturday_night, zone=NY, window=WEEKDAYS, holidays=NO_HOLIDAYS, anytime=True)
        == saturday_night
    )
    due = plan_send_time(
        saturday_night,
        zone=NY,
        window=WEEKDAYS,
        holidays=NO_HOLIDAYS,
        previous=[at(NY, 2026, 3, 14, 22)],
        limits=Limits(min_gap=Delay(2, DelayUnit.HOURS), max_per_week=None),
        anytime=True,
    )
    assert due == at(NY, 2026, 3, 15, 0)


def test_no_previous_touches_means_no_limit() -> None:
    earliest = at(NY, 2026, 3, 11, 10)
    assert earliest_after_limits(earliest, [], Limits(), NY, WEEKDAYS, NO_HOLIDAYS) == earliest


# ---------------------------------------------------------------------------
# Problems with codes and zones


def test_unknown_time_zone_suggests_the_closest() -> None:
    assert timezone_problem("Europe/Berlin") is None
    assert timezone_problem("Europe/Berln") == (
        "unknown time zone 'Europe/Berln'",
        "did you mean 'Europe/Berlin'? Use an IANA name like 'America/New_York'",
    )
    problem = timezone_problem("Eastern Standard")
    assert problem is not None
    assert problem[0] == "unknown time zone 'Eastern Standard'"
    assert problem[1] is not None and "America/New_York" in problem[1]


def test_uk_and_en_point_to_gb() -> None:
    for code in ("UK", "uk", "EN"):
        problem = holiday_problem(code)
        assert problem is not None
        assert problem[0] == f"unknown holiday country {code.upper()!r}"
        assert problem[1] is not None and problem[1].startswith("did you mean 'GB'?")
    with pytest.raises(ValueError, match="unknown holiday country 'UK'"):
        HolidayCalendar(["UK"])


def test_unknown_country_suggests_a_supported_one() -> None:
    assert holiday_problem("US") is None
    assert holiday_problem("us-ca") is None
    problem = holiday_problem("USA")
    assert problem is not None
    assert problem[0] == "unknown holiday country 'USA'"
    assert problem[1] is not None and problem[1].startswith("did you mean 'US'?")
    with pytest.raises(ValueError, match="unknown holiday country 'XQ'"):
        HolidayCalendar(["XQ"])


def test_unknown_subdivision_lists_the_real_ones() -> None:
    problem = holiday_problem("US-ZZ")
    assert problem is not None
    message, hint = problem
    assert message == "unknown subdivision 'ZZ' of holiday country 'US'"
    assert hint is not None and "AK, AL" in hint and "more" in hint
    problem = holiday_problem("GB-XYZ")
    assert problem is not None
    assert problem[1] is not None and "ENG, NIR, SCT, WLS" in problem[1]
    problem = holiday_problem("US-CAL")
    assert problem is not None
    assert problem[1] is not None and problem[1].startswith("did you mean 'US-CA'?")
    with pytest.raises(ValueError, match="unknown subdivision"):
        HolidayCalendar(["US-ZZ"])


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 3, 11, 10)
    aware = at(NY, 2026, 3, 11, 10)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_send_time(naive, NY, WEEKDAYS, NO_HOLIDAYS)
    with pytest.raises(ValueError, match="timezone-aware"):
        is_sendable(naive, NY, WEEKDAYS, NO_HOLIDAYS)
    with pytest.raises(ValueError, match="timezone-aware"):
        add_delay(naive, Delay(1), NY, WEEKDAYS, NO_HOLIDAYS)
    with pytest.raises(ValueError, match="timezone-aware"):
        earliest_after_limits(aware, [naive], Limits(), NY, WEEKDAYS, NO_HOLIDAYS)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_send_time(naive, zone=NY, window=WEEKDAYS, holidays=NO_HOLIDAYS)


# ---------------------------------------------------------------------------
# Properties

ZONES = [
    ZoneInfo(name)
    for name in (
        "UTC",
        "America/New_York",
        "America/Los_Angeles",
        "Europe/Berlin",
        "Europe/London",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
        "America/St_Johns",
        "Pacific/Chatham",
        "America/Santiago",
    )
]
CALENDARS = [NO_HOLIDAYS, US, GB_DE]
LO = datetime(2020, 1, 1, tzinfo=UTC)
HI = datetime(2035, 1, 1, tzinfo=UTC)


@functools.cache
def transitions(zone: ZoneInfo) -> tuple[datetime, ...]:
    """UTC instants between LO and HI at which the zone's offset changes."""
    found: list[datetime] = []
    left = LO
    while left < HI:
        right = left + timedelta(days=1)
        if left.astimezone(zone).utcoffset() != right.astimezone(zone).utcoffset():
            a, b = left, right
            while b - a > timedelta(seconds=1):
                mid = a + (b - a) / 2
                if mid.astimezone(zone).utcoffset() == a.astimezone(zone).utcoffset():
                    a = mid
                else:
                    b = mid
            found.append(b.replace(microsecond=0))
        left = right
    return tuple(found)


@st.composite
def windows(draw: st.DrawFn) -> SendWindow:
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    count = draw(st.sampled_from([2, 4]))
    minutes = sorted(draw(st.sets(st.integers(0, 24 * 60 - 1), min_size=count, max_size=count)))

    def clock(minute: int) -> time:
        return time(minute // 60, minute % 60)

    hours = tuple(TimeRange(clock(minutes[i]), clock(minutes[i + 1])) for i in range(0, count, 2))
    return SendWindow(days=days, hours=hours)


@st.composite
def instants(draw: st.DrawFn, zone: ZoneInfo) -> datetime:
    """Any instant 2020-2035, often within a day and a half of a DST change in ``zone``."""
    changes = transitions(zone)
    near_change = draw(st.booleans())
    if changes and near_change:
        base = draw(st.sampled_from(changes))
        shift = timedelta(seconds=draw(st.integers(-36 * 3600, 36 * 3600)))
        moment = base + shift
    else:
        moment = draw(
            st.datetimes(
                min_value=LO.replace(tzinfo=None),
                max_value=HI.replace(tzinfo=None),
                timezones=st.just(UTC),
            )
        )
    # Hand the functions times in the zone as well as in UTC.
    return moment.astimezone(zone) if draw(st.booleans()) else moment


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ZoneInfo, SendWindow, HolidayCalendar, datetime]:
    zone = draw(st.sampled_from(ZONES))
    return zone, draw(windows()), draw(st.sampled_from(CALENDARS)), draw(instants(zone))


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def later(moment: datetime, seconds: int) -> datetime:
    """``seconds`` of real time after ``moment``, in the same zone (plain ``+`` on an aware
    datetime moves the wall clock instead)."""
    return (utc(moment) + timedelta(seconds=seconds)).astimezone(moment.tzinfo)


def is_ambiguous(moment: datetime) -> bool:
    """True if ``moment``'s local wall time happens twice (the repeated hour of a fall-back)."""
    return moment.replace(fold=0).utcoffset() != moment.replace(fold=1).utcoffset()


def open_day(day: date, window: SendWindow, holidays: HolidayCalendar) -> bool:
    return day.weekday() in window.days and not holidays.is_holiday(day)


def inside_window(
    moment: datetime, zone: ZoneInfo, window: SendWindow, cal: HolidayCalendar
) -> bool:
    local = moment.astimezone(zone)
    clock = local.time().replace(fold=0)
    inside_hours = any(r.start <= clock < r.end for r in window.hours)
    return open_day(local.date(), window, cal) and inside_hours


def assert_nothing_sendable_between(
    earliest: datetime, result: datetime, zone: ZoneInfo, window: SendWindow, cal: HolidayCalendar
) -> None:
    """Every window opening is on a whole local minute, so a one-minute lattice from
    ``earliest`` meets every sendable stretch; whole closed days are jumped over."""
    moment = utc(earliest) + timedelta(minutes=1)
    end = utc(result)
    while moment < end:
        local = moment.astimezone(zone)
        if not open_day(local.date(), window, cal):
            midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
            moment = max(utc(midnight) - timedelta(hours=3), moment + timedelta(minutes=1))
            continue
        assert not inside_window(moment, zone, window, cal), (earliest, moment, result)
        moment += timedelta(minutes=1)


PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(scenarios())
def test_next_send_time_is_the_first_sendable_moment(
    scenario: tuple[ZoneInfo, SendWindow, HolidayCalendar, datetime],
) -> None:
    zone, window, cal, earliest = scenario
    result = next_send_time(earliest, zone, window, cal)
    assert result.tzinfo is zone
    assert utc(result) >= utc(earliest)
    assert inside_window(result, zone, window, cal)
    assert is_sendable(result, zone, window, cal)
    if utc(result) != utc(earliest):
        # The result is a window opening: a window start on the wall clock, or the instant
        # the clock jumps into a window at a DST change.
        starts = {r.start for r in window.hours}
        jumped = (utc(result) - timedelta(seconds=1)).astimezone(zone).utcoffset() != (
            result.utcoffset()
        )
        assert result.time().replace(fold=0) in starts or jumped
        assert not is_sendable(earliest, zone, window, cal)
    assert_nothing_sendable_between(earliest, result, zone, window, cal)


@PROPERTY
@given(scenarios(), st.integers(0, 4 * 24 * 60 * 60))
def test_next_send_time_is_monotone_and_idempotent(
    scenario: tuple[ZoneInfo, SendWindow, HolidayCalendar, datetime], later_by: int
) -> None:
    zone, window, cal, first = scenario
    second = later(first, later_by)
    a = next_send_time(first, zone, window, cal)
    b = next_send_time(second, zone, window, cal)
    assert utc(a) <= utc(b)
    assert next_send_time(a, zone, window, cal) == a
    assert utc(next_send_time(a, zone, window, cal)) == utc(a)


delays = st.builds(Delay, st.integers(0, 12), st.sampled_from(list(DelayUnit)))


@PROPERTY
@given(scenarios(), delays, st.integers(0, 3 * 24 * 60 * 60))
def test_add_delay_is_monotone_and_never_earlier(
    scenario: tuple[ZoneInfo, SendWindow, HolidayCalendar, datetime],
    delay: Delay,
    later_by: int,
) -> None:
    zone, window, cal, first = scenario
    second = later(first, later_by)
    a = add_delay(first, delay, zone, window, cal)
    b = add_delay(second, delay, zone, window, cal)
    assert a.tzinfo is zone and b.tzinfo is zone
    assert utc(a) >= utc(first)
    assert utc(b) >= utc(second)
    if delay.immediate or delay.fixed_duration() is not None:
        assert utc(a) <= utc(b)
        return
    # Calendar delays keep the wall-clock time, so their order follows the wall clock. That
    # breaks only where the wall clock itself runs backwards (a start in the repeated hour of
    # a fall-back) and, for business days, from a closed day, where "same time on the next
    # business day" makes Saturday 08:00 come out before Friday 10:00 does.
    local_a, local_b = first.astimezone(zone), second.astimezone(zone)
    assert a.date() <= b.date()
    if is_ambiguous(local_a) or is_ambiguous(local_b):
        return
    if delay.unit is DelayUnit.BUSINESS_DAYS and not (
        open_day(local_a.date(), window, cal) and open_day(local_b.date(), window, cal)
    ):
        return
    assert utc(a) <= utc(b)


@PROPERTY
@given(
    scenarios(),
    st.lists(st.integers(-10 * 24 * 60, 3 * 24 * 60), max_size=6),
    st.sampled_from(
        [None, Delay(0), Delay(4, DelayUnit.HOURS), Delay(1), Delay(2, DelayUnit.BUSINESS_DAYS)]
    ),
    st.sampled_from([None, 1, 2, 3]),
    st.booleans(),
)
def test_plan_send_time_respects_the_limits(
    scenario: tuple[ZoneInfo, SendWindow, HolidayCalendar, datetime],
    offsets: list[int],
    min_gap: Delay | None,
    max_per_week: int | None,
    anytime: bool,
) -> None:
    zone, window, cal, earliest = scenario
    previous = [later(earliest, 60 * m) for m in offsets]
    limits = Limits(min_gap=min_gap, max_per_week=max_per_week)
    result = plan_send_time(
        earliest,
        zone=zone,
        window=window,
        holidays=cal,
        previous=previous,
        limits=limits,
        anytime=anytime,
    )
    assert result.tzinfo is zone
    assert utc(result) >= utc(earliest)
    if not anytime:
        assert is_sendable(result, zone, window, cal)
    if min_gap is not None and previous:
        latest = max(previous, key=utc)
        assert utc(result) >= utc(add_delay(latest, min_gap, zone, window, cal))
    if max_per_week is not None:
        within_week = [
            p for p in previous if utc(p) <= utc(result) and utc(result) - utc(p) < timedelta(7)
        ]
        assert len(within_week) < max_per_week
    if not previous and anytime:
        assert utc(result) == utc(earliest)
    limited = earliest_after_limits(earliest, previous, limits, zone, window, cal)
    assert utc(earliest) <= utc(limited) <= utc(result)
