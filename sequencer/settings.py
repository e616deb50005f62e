"""Settings from ``SEQUENCER_*`` environment variables, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from sequencer.core.delays import Delay, DelayUnit
from sequencer.core.errors import ConfigError
from sequencer.store.database import DEFAULT_URL

PREFIX = "SEQUENCER_"
#: Every environment variable the program reads, with what it is for (docs and deployment
#: files are checked against this list).
VARIABLES: Final[dict[str, str]] = {
    "SEQUENCER_DATABASE_URL": "database URL (default sqlite+aiosqlite:///sequencer.db)",
    "SEQUENCER_SECRET": "signs unsubscribe links and Message-IDs (16+ characters, keep stable)",
    "SEQUENCER_SECRET_FILE": "a file holding SEQUENCER_SECRET",
    "SEQUENCER_REDIS_URL": "Redis for `sequencer worker` (default redis://localhost:6379/0)",
    "SEQUENCER_CONCURRENCY": "sends in flight at once per process (default 8)",
    "SEQUENCER_STALE_AFTER": "seconds before a dead process's claimed touches are recovered",
    "SEQUENCER_BATCH_SIZE": "rows per transaction when enrolling (default 500)",
    "SEQUENCER_TASK_EXPIRY": "how long an undone rep task waits before the sequence moves on",
    "SEQUENCER_NOW": "a fixed current time (ISO 8601 with offset), for tests and demos",
    "SEQUENCER_CONFIG": "path of sequencer.yaml",
    "SEQUENCER_SEQUENCES_DIR": "folder of sequence YAML files",
    "SEQUENCER_TEMPLATES_DIR": "folder of email templates",
    "SEQUENCER_API_TOKEN": "bearer token the HTTP API requires (`sequencer web`)",
    "SEQUENCER_API_TOKEN_FILE": "a file holding SEQUENCER_API_TOKEN",
    "SEQUENCER_DEBUG": "set to 1 to see tracebacks of internal errors",
}
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
    #: Signs unsubscribe links and Message-IDs; keep it stable (SEQUENCER_SECRET or _FILE).
    secret: bytes | None = field(default=None, repr=False)
    redis_url: str = "redis://localhost:6379/0"
    #: Sends in flight at once per process.
    concurrency: int = 8
    #: A touch claimed or `sending` this long by a process that went away is recovered.
    stale_after: float = 300.0
    #: The bearer token the HTTP API requires; None switches the API off (`sequencer web`).
    api_token: str | None = field(default=None, repr=False)

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
        secret = env.get(PREFIX + "SECRET")
        secret_file = env.get(PREFIX + "SECRET_FILE")
        if secret:
            values["secret"] = secret.encode()
        elif secret_file:
            try:
                values["secret"] = open(secret_file, "rb").read().strip()  # noqa: SIM115
            except OSError as exc:
                raise ConfigError(
                    f"{PREFIX}SECRET_FILE: cannot read {secret_file}: {exc.strerror}"
                ) from exc
        if "secret" in values and len(values["secret"]) < 16:  # type: ignore[arg-type]
            raise ConfigError(f"{PREFIX}SECRET must be at least 16 characters long")
        token = _api_token(env)
        if token is not None:
            values["api_token"] = token
        if env.get(PREFIX + "REDIS_URL"):
            values["redis_url"] = env[PREFIX + "REDIS_URL"]
        concurrency = env.get(PREFIX + "CONCURRENCY")
        if concurrency:
            if not concurrency.isdigit() or not 1 <= int(concurrency) <= 256:
                raise ConfigError(f"{PREFIX}CONCURRENCY={concurrency!r}: give a number 1-256")
            values["concurrency"] = int(concurrency)
        if env.get(PREFIX + "STALE_AFTER"):
            raw = env[PREFIX + "STALE_AFTER"]
            try:
                values["stale_after"] = float(raw)
            except ValueError as exc:
                raise ConfigError(f"{PREFIX}STALE_AFTER={raw!r}: give seconds") from exc
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


#: Shortest API token accepted: a guessable token would open the API to anyone.
MIN_API_TOKEN = 16


def _api_token(env: Mapping[str, str]) -> str | None:
    """SEQUENCER_API_TOKEN, else the contents of SEQUENCER_API_TOKEN_FILE, else None."""
    token = env.get(PREFIX + "API_TOKEN")
    path = env.get(PREFIX + "API_TOKEN_FILE")
    if not token and path:
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{PREFIX}API_TOKEN_FILE: cannot read {path}: {reason}") from exc
    if not token:
        return None
    token = token.strip()
    # Never echo the token itself: error messages end up in logs.
    if len(token) < MIN_API_TOKEN or not token.isprintable() or " " in token:
        raise ConfigError(
            f"{PREFIX}API_TOKEN must be at least {MIN_API_TOKEN} printable characters without "
            "spaces; make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token
