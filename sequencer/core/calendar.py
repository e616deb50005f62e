"""Send-time arithmetic: time zones, send windows, public holidays, delays and nuisance limits."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo, available_timezones

import holidays as holidays_lib

from sequencer.core.delays import Delay, DelayUnit
from sequencer.core.model import Limits, SendWindow
from sequencer.core.problems import did_you_mean

#: How far ahead to look for a sendable moment or a business day before giving up.
SEARCH_DAYS = 3 * 366

_WEEK = timedelta(days=7)
_ZONE_EXAMPLE = "Use an IANA name like 'America/New_York'"
_SUBDIVISIONS_SHOWN = 10

# Codes people write for the United Kingdom that are not ISO 3166-1 codes.
_UK_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "UK": "did you mean 'GB'? The United Kingdom's ISO 3166 code is GB",
        "EN": "did you mean 'GB'? For England alone use 'GB-ENG'",
    }
)


# ---------------------------------------------------------------------------
# Holidays


@functools.cache
def _supported() -> Mapping[str, tuple[str, ...]]:
    """Canonical country codes (no aliases such as 'UK' or 'USA') and their subdivisions."""
    table = holidays_lib.list_supported_countries(include_aliases=False)
    return MappingProxyType(
        {str(code): tuple(str(s) for s in subs) for code, subs in table.items()}
    )


@functools.cache
def _aliases() -> frozenset[str]:
    every = holidays_lib.list_supported_countries(include_aliases=True)
    return frozenset(str(code) for code in every) - frozenset(_supported())


def _canonical_of_alias(code: str) -> str | None:
    """The canonical code behind an alias the holidays package knows ('UK' -> 'GB')."""
    if code not in _aliases():
        return None
    country = holidays_lib.country_holidays(code, years=()).country
    return country if isinstance(country, str) else None


def _split_code(code: str) -> tuple[str, str | None]:
    country, sep, subdiv = code.strip().partition("-")
    return country.strip().upper(), (subdiv.strip() if sep else None)


def _match_subdivision(subdiv: str, choices: Sequence[str]) -> str | None:
    folded = subdiv.casefold()
    for choice in choices:
        if choice.casefold() == folded:
            return choice
    return None


def holiday_problem(code: str) -> tuple[str, str | None] | None:
    """``None`` if ``code`` is a supported country or country-subdivision code ("US", "US-CA");
    otherwise ``(message, hint)`` saying what is wrong and what would work."""
    country, subdiv = _split_code(code)
    supported = _supported()
    if country not in supported:
        message = f"unknown holiday country {country!r}"
        if country in _UK_HINTS:
            return message, _UK_HINTS[country]
        hint: str | None = None
        canonical = _canonical_of_alias(country)
        if canonical is not None:
            hint = f"did you mean {canonical!r}?"
        else:
            hint = did_you_mean(country, supported)
        usage = "Use a two-letter ISO 3166 country code like 'US', 'GB' or 'DE'"
        return message, f"{hint} {usage}" if hint else usage
    if subdiv is None:
        return None
    choices = supported[country]
    if _match_subdivision(subdiv, choices) is not None:
        return None
    message = f"unknown subdivision {subdiv!r} of holiday country {country!r}"
    if not choices:
        return message, f"{country!r} has no subdivisions; use {country!r} alone"
    shown = ", ".join(choices[:_SUBDIVISIONS_SHOWN])
    more = len(choices) - _SUBDIVISIONS_SHOWN
    listing = f"Subdivisions of {country}: {shown}" + (f" and {more} more" if more > 0 else "")
    close = did_you_mean(subdiv, choices)
    if close:
        close = close.replace("did you mean '", f"did you mean '{country}-", 1)
        return message, f"{close} {listing}"
    return message, listing


@functools.lru_cache(maxsize=4096)
def _year_table(country: str, subdiv: str | None, year: int) -> Mapping[date, str]:
    table = holidays_lib.country_holidays(country, subdiv=subdiv, years=year)
    return MappingProxyType({day: str(name) for day, name in table.items()})


class HolidayCalendar:
    """Public holidays of some countries; a day is a holiday if it is one in any of them."""

    codes: tuple[str, ...]

    def __init__(self, codes: Iterable[str] = ()) -> None:
        if isinstance(codes, str):
            # A lone "US" would otherwise be read as the codes "U" and "S".
            codes = (codes,)
        parsed: list[tuple[str, str | None]] = []
        for code in codes:
            problem = holiday_problem(code)
            if problem is not None:
                raise ValueError(problem[0])
            country, subdiv = _split_code(code)
            if subdiv is not None:
                subdiv = _match_subdivision(subdiv, _supported()[country])
            if (country, subdiv) not in parsed:
                parsed.append((country, subdiv))
        self._parts: tuple[tuple[str, str | None], ...] = tuple(parsed)
        self.codes = tuple(c if s is None else f"{c}-{s}" for c, s in parsed)

    def __repr__(self) -> str:
        return f"HolidayCalendar({list(self.codes)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HolidayCalendar):
            return NotImplemented
        return set(self.codes) == set(other.codes)

    def __hash__(self) -> int:
        return hash(frozenset(self.codes))

    def is_holiday(self, day: date) -> bool:
        """True if ``day`` is a public holiday in any of the calendar's countries."""
        return self.holiday_name(day) is not None

    def holiday_name(self, day: date) -> str | None:
        """The holiday's name (names from several countries joined by '; '), or ``None``."""
        if isinstance(day, datetime):
            day = day.date()
        names: list[str] = []
        for country, subdiv in self._parts:
            name = _year_table(country, subdiv, day.year).get(day)
            if name is not None and name not in names:
                names.append(name)
        return "; ".join(names) if names else None


# ---------------------------------------------------------------------------
# Time zones


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def timezone_problem(name: str) -> tuple[str, str | None] | None:
    """``None`` if ``name`` is a valid IANA time zone; otherwise ``(message, hint)``."""
    if name in _zone_names():
        return None
    message = f"unknown time zone {name!r}"
    close = did_you_mean(name, sorted(_zone_names()))
    return message, f"{close} {_ZONE_EXAMPLE}" if close else _ZONE_EXAMPLE


# ---------------------------------------------------------------------------
# Windows


def _utc(moment: datetime) -> datetime:
    # Aware datetimes sharing a tzinfo compare and subtract by wall clock, ignoring the offset,
    # which is wrong across a fall-back; UTC makes every comparison one of real instants.
    return moment.astimezone(UTC)


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")


def _check_window(window: SendWindow) -> None:
    if not any(0 <= d <= 6 for d in window.days):
        raise ValueError("the send window allows no days of the week")
    if not window.hours:
        raise ValueError("the send window has no hours")
    for hours in window.hours:
        if not hours.start < hours.end:
            raise ValueError(f"send window hours {hours} must start before they end")


def _wall(day: date, at: time, zone: ZoneInfo, fold: int = 0) -> datetime:
    """The real instant of a local wall-clock time on ``day``. ``fold`` picks the occurrence of
    an ambiguous (fall-back) time. A time inside a spring-forward gap does not exist and becomes
    the first real instant after the gap, so that later wall times never map to earlier
    instants."""
    wanted = datetime.combine(day, at.replace(tzinfo=None, fold=0))
    moment = wanted.replace(tzinfo=zone, fold=fold).astimezone(UTC).astimezone(zone)
    if moment.replace(tzinfo=None, fold=0) == wanted:
        return moment
    # In a gap the two readings of the wall time straddle the transition; the first instant
    # whose wall clock reaches the wanted time is the end of the gap.
    lo = wanted.replace(tzinfo=zone, fold=1).astimezone(UTC)
    hi = wanted.replace(tzinfo=zone, fold=0).astimezone(UTC)
    lo, hi = min(lo, hi), max(lo, hi)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).replace(tzinfo=None, fold=0) >= wanted:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0).astimezone(zone)


def _is_open_day(day: date, window: SendWindow, holidays: HolidayCalendar) -> bool:
    return day.weekday() in window.days and not holidays.is_holiday(day)


def is_sendable(
    moment: datetime, zone: ZoneInfo, window: SendWindow, holidays: HolidayCalendar
) -> bool:
    """True if ``moment``, seen in ``zone``, falls on an allowed weekday that is not a holiday
    and inside one of ``window.hours`` (``[start, end)``, local wall clock)."""
    _require_aware(moment, "moment")
    local = moment.astimezone(zone)
    if not _is_open_day(local.date(), window, holidays):
        return False
    clock = local.time()
    return any(hours.start <= clock < hours.end for hours in window.hours)


def _transitions(day: date, zone: ZoneInfo) -> list[datetime]:
    """Instants around local ``day`` at which the zone's UTC offset changes."""
    # A margin of a few hours covers days whose midnight itself is moved by a transition.
    lo = _wall(day, time(0), zone).astimezone(UTC) - timedelta(hours=3)
    hi = _wall(day + timedelta(days=1), time(0), zone).astimezone(UTC) + timedelta(hours=3)
    if lo.astimezone(zone).utcoffset() == hi.astimezone(zone).utcoffset():
        return []
    found: list[datetime] = []
    step = timedelta(minutes=30)
    left = lo
    while left < hi:
        right = min(left + step, hi)
        if left.astimezone(zone).utcoffset() != right.astimezone(zone).utcoffset():
            a, b = left, right
            # Offsets change on whole seconds; bisect down to one.
            while b - a > timedelta(seconds=1):
                mid = a + (b - a) / 2
                if mid.astimezone(zone).utcoffset() == a.astimezone(zone).utcoffset():
                    a = mid
                else:
                    b = mid
            found.append(b.replace(microsecond=0).astimezone(zone))
        left = right
    return found


def _openings(
    day: date, zone: ZoneInfo, window: SendWindow, holidays: HolidayCalendar
) -> list[datetime]:
    """Every instant on local ``day`` at which sending could switch on: each window start
    (both readings of an ambiguous wall time, since the repeated hour opens the window twice)
    and each offset transition (falling back can put the clock straight into the middle of a
    window)."""
    if not _is_open_day(day, window, holidays):
        return []
    found: list[datetime] = []
    for hours in window.hours:
        for fold in (0, 1):
            found.append(_wall(day, hours.start, zone, fold))
    found.extend(_transitions(day, zone))
    return [moment for moment in found if moment.date() == day]


def next_send_time(
    earliest: datetime, zone: ZoneInfo, window: SendWindow, holidays: HolidayCalendar
) -> datetime:
    """The earliest moment at or after ``earliest`` that is sendable, as an aware datetime in
    ``zone``: ``earliest`` itself if it is sendable, otherwise the next window opening.

    Raises ``ValueError`` if the window has no days or hours, or if nothing within
    ``SEARCH_DAYS`` days is sendable (for instance when every allowed day is a holiday).
    """
    _require_aware(earliest, "earliest")
    _check_window(window)
    local = earliest.astimezone(zone)
    if is_sendable(local, zone, window, holidays):
        return local

    def sendable_openings(day: date) -> list[datetime]:
        return [
            moment
            for moment in _openings(day, zone, window, holidays)
            if _utc(moment) > _utc(local) and is_sendable(moment, zone, window, holidays)
        ]

    start = local.date()
    for offset in range(SEARCH_DAYS + 1):
        day = start + timedelta(days=offset)
        found = sendable_openings(day)
        if found:
            # A fall-back across midnight can make the next local day begin earlier in real
            # time than the end of this one, so its openings compete too.
            found.extend(sendable_openings(day + timedelta(days=1)))
            return min(found, key=_utc)
    raise ValueError(
        f"nothing is sendable within {SEARCH_DAYS} days of {local.isoformat()}: "
        "check the send window days against the holidays"
    )


# ---------------------------------------------------------------------------
# Delays and limits


def _business_day_after(
    day: date, count: int, window: SendWindow, holidays: HolidayCalendar
) -> date:
    if not any(0 <= d <= 6 for d in window.days):
        raise ValueError("the send window allows no days of the week, so no business days")
    limit = day + timedelta(days=SEARCH_DAYS)
    remaining = count
    while remaining > 0:
        day += timedelta(days=1)
        if day > limit:
            raise ValueError(f"no business day found within {SEARCH_DAYS} days")
        if _is_open_day(day, window, holidays):
            remaining -= 1
    return day


def business_days_between(
    start: date, end: date, window: SendWindow, holidays: HolidayCalendar
) -> int:
    """How many business days (allowed weekdays that are not holidays) fall in ``(start, end]``;
    zero when ``end <= start``."""
    count = 0
    day = start
    while day < end:
        day += timedelta(days=1)
        if _is_open_day(day, window, holidays):
            count += 1
    return count


def add_delay(
    start: datetime,
    delay: Delay,
    zone: ZoneInfo,
    window: SendWindow,
    holidays: HolidayCalendar,
) -> datetime:
    """The earliest time a step may go out ``delay`` after ``start``, before the window applies.

    Minutes and hours are exact elapsed time. Days and weeks keep the local wall-clock time in
    ``zone`` (09:12 stays 09:12 across a DST change). Business days count forward over days
    whose weekday is in ``window.days`` and that are not holidays, keeping the wall-clock time.
    A wall time that falls in a spring-forward gap becomes the first instant after the gap; an
    ambiguous one takes its first occurrence. The result is in ``zone``.
    """
    _require_aware(start, "start")
    local = start.astimezone(zone)
    if delay.immediate:
        return local
    if delay.amount < 0:
        raise ValueError(f"a delay cannot be negative: {delay.amount}")
    fixed = delay.fixed_duration()
    if fixed is not None:
        # Aware arithmetic in one zone moves the wall clock; UTC gives elapsed time.
        return (local.astimezone(UTC) + fixed).astimezone(zone)
    if delay.unit is DelayUnit.BUSINESS_DAYS:
        day = _business_day_after(local.date(), delay.amount, window, holidays)
    else:
        days = delay.amount * 7 if delay.unit is DelayUnit.WEEKS else delay.amount
        day = local.date() + timedelta(days=days)
    return _wall(day, local.time(), zone)


def earliest_after_limits(
    earliest: datetime,
    previous: Sequence[datetime],
    limits: Limits,
    zone: ZoneInfo,
    window: SendWindow,
    holidays: HolidayCalendar,
) -> datetime:
    """Push ``earliest`` later until the nuisance limits hold against ``previous`` (earlier
    touches to the same prospect, any order), and return it in ``zone``.

    ``min_gap``: no earlier than ``min_gap`` after the latest previous touch.
    ``max_per_week``: at most that many touches in any 168-hour period, the new one included,
    counting only previous touches at or before the candidate.
    """
    _require_aware(earliest, "earliest")
    for moment in previous:
        _require_aware(moment, "a previous touch")
    candidate = earliest.astimezone(zone)
    if not previous:
        return candidate
    if limits.min_gap is not None:
        latest = max(previous, key=_utc)
        gap_end = add_delay(latest, limits.min_gap, zone, window, holidays)
        candidate = max(candidate, gap_end, key=_utc)
    cap = limits.max_per_week
    if cap is None:
        return candidate
    if cap < 1:
        raise ValueError(f"max_per_week must be at least 1, got {cap}")
    ordered = sorted((_utc(moment) for moment in previous), reverse=True)
    while True:
        now = _utc(candidate)
        before = [moment for moment in ordered if moment <= now]
        if len(before) < cap or now - before[cap - 1] >= _WEEK:
            return candidate
        # Moving later may bring more previous touches into view, so check again.
        candidate = (before[cap - 1] + _WEEK).astimezone(zone)


def plan_send_time(
    earliest: datetime,
    *,
    zone: ZoneInfo,
    window: SendWindow,
    holidays: HolidayCalendar,
    previous: Sequence[datetime] = (),
    limits: Limits | None = None,
    anytime: bool = False,
) -> datetime:
    """The due time of a touch: the nuisance limits (if given), then the send window (unless
    ``anytime``, which skips the window but keeps the limits). Never before ``earliest``;
    returned in ``zone``."""
    _require_aware(earliest, "earliest")
    candidate = earliest.astimezone(zone)
    while True:
        if limits is not None:
            candidate = earliest_after_limits(candidate, previous, limits, zone, window, holidays)
        if anytime:
            return candidate
        opened = next_send_time(candidate, zone, window, holidays)
        if _utc(opened) == _utc(candidate) or limits is None:
            return opened
        # The window moved the touch later, which can bring more previous touches into the
        # week before it; loop until both hold. Each pass moves past at least one touch.
        candidate = opened
