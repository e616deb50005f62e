"""Fixtures of the web tests (the root conftest's databases and servers apply too)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def sqlite_url(tmp_path: Path, migrated_sqlite_file: Path) -> str:
    """A migrated SQLite database of its own, for tests with nothing backend-specific."""
    target = tmp_path / "web.db"
    shutil.copy(migrated_sqlite_file, target)
    return f"sqlite+aiosqlite:///{target}"
