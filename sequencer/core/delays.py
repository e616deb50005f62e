"""Delays between steps: ``immediately``, ``4 hours``, ``3 days``, ``2 business days``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class DelayUnit(StrEnum):
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    BUSINESS_DAYS = "business days"
    WEEKS = "weeks"


_UNIT_WORDS: dict[str, DelayUnit] = {
    "m": DelayUnit.MINUTES,
    "min": DelayUnit.MINUTES,
    "mins": DelayUnit.MINUTES,
    "minute": DelayUnit.MINUTES,
    "minutes": DelayUnit.MINUTES,
    "h": DelayUnit.HOURS,
    "hr": DelayUnit.HOURS,
    "hrs": DelayUnit.HOURS,
    "hour": DelayUnit.HOURS,
    "hours": DelayUnit.HOURS,
    "d": DelayUnit.DAYS,
    "day": DelayUnit.DAYS,
    "days": DelayUnit.DAYS,
    "bd": DelayUnit.BUSINESS_DAYS,
    "business day": DelayUnit.BUSINESS_DAYS,
    "business days": DelayUnit.BUSINESS_DAYS,
    "workday": DelayUnit.BUSINESS_DAYS,
    "workdays": DelayUnit.BUSINESS_DAYS,
    "working day": DelayUnit.BUSINESS_DAYS,
    "working days": DelayUnit.BUSINESS_DAYS,
    "w": DelayUnit.WEEKS,
    "week": DelayUnit.WEEKS,
    "weeks": DelayUnit.WEEKS,
}

_DELAY = re.compile(r"^\s*(\d{1,4})\s*([a-z]+(?:\s+[a-z]+)?)\s*$")
_IMMEDIATE = frozenset({"immediately", "now", "0"})

#: Shown in error messages so the author sees what is accepted.
DELAY_EXAMPLES = "'immediately', '30 minutes', '4 hours', '3 days', '2 business days', '1 week'"


@dataclass(frozen=True)
class Delay:
    """A wait before a step. ``amount == 0`` means immediately."""

    amount: int
    unit: DelayUnit = DelayUnit.DAYS

    @property
    def immediate(self) -> bool:
        return self.amount == 0

    @classmethod
    def parse(cls, text: str) -> Delay:
        """Parse a delay phrase; raises ``ValueError`` naming what is accepted."""
        cleaned = " ".join(str(text).strip().lower().split())
        if cleaned in _IMMEDIATE:
            return cls(0, DelayUnit.MINUTES)
        match = _DELAY.match(cleaned)
        if match:
            unit = _UNIT_WORDS.get(match.group(2))
            if unit is not None:
                return cls(int(match.group(1)), unit)
        raise ValueError(f"cannot read delay {str(text)!r}; write it like {DELAY_EXAMPLES}")

    def fixed_duration(self) -> timedelta | None:
        """The exact duration for minutes and hours; ``None`` for calendar-based units."""
        if self.unit is DelayUnit.MINUTES:
            return timedelta(minutes=self.amount)
        if self.unit is DelayUnit.HOURS:
            return timedelta(hours=self.amount)
        return None

    def approximate(self) -> timedelta:
        """A rough length, for comparing delays (a business day counts as 1.4 days)."""
        fixed = self.fixed_duration()
        if fixed is not None:
            return fixed
        if self.unit is DelayUnit.WEEKS:
            return timedelta(weeks=self.amount)
        if self.unit is DelayUnit.BUSINESS_DAYS:
            return timedelta(days=self.amount * 1.4)
        return timedelta(days=self.amount)

    def __str__(self) -> str:
        if self.immediate:
            return "immediately"
        word = str(self.unit.value)
        if self.amount == 1:
            word = word[:-1]
        return f"{self.amount} {word}"
