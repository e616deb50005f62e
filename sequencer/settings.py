"""Settings from ``SEQUENCER_*`` environment variables, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sequencer.core.delays import Delay, DelayUnit
from sequencer.core.errors import ConfigError
from sequencer.store.database import DEFAULT_URL

PREFIX = "SEQUENCER_"
_TWO_BUSINESS_DAYS: Final = Delay(2, DelayUnit.BUSINESS_DAYS)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_URL
    #: An open rep task this long past its due time moves on by itself.
    task_expiry: Delay = _TWO_BUSINESS_DAYS
    #: Enrollment batch size (rows per transaction).
    batch_size: int = 500
    #: A fixed "now" (ISO 8601 with offset) instead of the real clock: for tests and demos.
    now: datetime | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if env.get(PREFIX + "DATABASE_URL"):
            values["database_url"] = env[PREFIX + "DATABASE_URL"]
        if env.get(PREFIX + "TASK_EXPIRY"):
            raw = env[PREFIX + "TASK_EXPIRY"]
            try:
                values["task_expiry"] = Delay.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{PREFIX}TASK_EXPIRY: {exc}") from exc
        if env.get(PREFIX + "BATCH_SIZE"):
            raw = env[PREFIX + "BATCH_SIZE"]
            if not raw.isdigit() or not 1 <= int(raw) <= 5000:
                raise ConfigError(
                    f"{PREFIX}BATCH_SIZE={raw!r}: give a whole number between 1 and 5000"
                )
            values["batch_size"] = int(raw)
        if env.get(PREFIX + "NOW"):
            raw = env[PREFIX + "NOW"]
            try:
                moment = datetime.fromisoformat(raw)
            except ValueError as exc:
                raise ConfigError(f"{PREFIX}NOW={raw!r} is not an ISO 8601 time") from exc
            if moment.tzinfo is None:
                raise ConfigError(
                    f"{PREFIX}NOW={raw!r} needs a UTC offset, e.g. 2026-03-02T09:00:00+00:00"
                )
            values["now"] = moment
        return cls(**values)  # type: ignore[arg-type]
