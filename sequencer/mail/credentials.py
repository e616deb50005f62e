"""Secrets for mail servers, read from an environment variable or a secrets file, never logged."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sequencer.core.errors import ConfigError


def resolve_secret(
    env_name: str | None, file_path: str | None, *, what: str, env: Mapping[str, str] | None = None
) -> str | None:
    """A secret from an environment variable or a file. Errors name where it was looked for,
    never the value."""
    env = os.environ if env is None else env
    if env_name:
        value = env.get(env_name)
        if not value:
            raise ConfigError(f"{what}: environment variable {env_name} is not set or empty")
        return value
    if file_path:
        try:
            value = Path(file_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{what}: cannot read secrets file {file_path}: {exc.strerror}"
            ) from exc
        if not value:
            raise ConfigError(f"{what}: secrets file {file_path} is empty")
        return value
    return None
