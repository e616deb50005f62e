"""Prospects sent as JSON objects, made into the same rows a CSV file gives.

Every value is cleaned the way the CSV reader cleans name and company cells, for every field:
control characters (CR and LF above all) become spaces and runs of whitespace collapse, so no
value can end a header line and start another (``Bcc:``) wherever a template puts it. Keys go
through the CSV header spellings (``Email Address``, ``First Name``, ``tz`` ...), and the row
through the CSV path's own checks, so the API and ``sequencer enroll`` accept the same people.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from sequencer.core.prospects import (
    MAX_VALUE_LENGTH,
    ProspectRow,
    RowProblem,
    map_headers,
    parse_row,
)

#: Prospects per request; more go in several requests (each one is answered in seconds).
MAX_PROSPECTS = 1000
#: Fields per prospect, and characters per field name.
MAX_FIELDS = 100
MAX_KEY_LENGTH = 100


def one_line(value: str) -> str:
    """Control characters become spaces, whitespace runs (Unicode line separators included)
    collapse to one space, the ends are trimmed."""
    spaced = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in value)
    return " ".join(spaced.split())


def parse_prospects(items: list[object]) -> tuple[list[ProspectRow | RowProblem], dict[int, str]]:
    """One row per item, ``line`` being its index in the request; and, for the items refused
    here, the field at fault."""
    rows: list[ProspectRow | RowProblem] = []
    fields: dict[int, str] = {}
    for index, item in enumerate(items):
        row = _row(index, item)
        if isinstance(row, tuple):
            problem, field = row
            rows.append(problem)
            if field:
                fields[index] = field
        else:
            rows.append(row)
    return rows, fields


def _row(index: int, item: object) -> ProspectRow | tuple[RowProblem, str | None]:
    if not isinstance(item, Mapping):
        return RowProblem(index, None, "each prospect must be a JSON object"), None
    if len(item) > MAX_FIELDS:
        return RowProblem(index, None, f"more than {MAX_FIELDS} fields"), None
    keys: list[str] = []
    values: list[str] = []
    for key, raw in item.items():
        name = one_line(str(key))
        if not name or len(name) > MAX_KEY_LENGTH:
            reason = f"field names must have 1 to {MAX_KEY_LENGTH} characters"
            return RowProblem(index, None, reason), name[:MAX_KEY_LENGTH] or None
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            return RowProblem(index, None, f"{name}: give text or a number"), name
        value = one_line(str(raw))
        if len(value) > MAX_VALUE_LENGTH:
            reason = f"{name}: {len(value)} characters; the limit is {MAX_VALUE_LENGTH}"
            return RowProblem(index, None, reason), name
        keys.append(name)
        values.append(value)
    mapping = map_headers(keys)
    if mapping.email_column is None:
        return RowProblem(index, None, "missing email: every prospect needs an email"), "email"
    parsed = parse_row(mapping, values, index)
    if isinstance(parsed, RowProblem):
        return parsed, "timezone" if "time zone" in parsed.reason else "email"
    return parsed


def skipped_field(reason: str) -> str | None:
    """The field an enrollment-stage reason is about (``missing field: the templates need
    first_name`` is about first_name; a duplicate, suppressed or enrolled one about email)."""
    head, _, detail = reason.partition(":")
    if head == "missing field" and "need " in detail:
        return detail.split("need ", 1)[1].split(",")[0].strip() or None
    if head in {
        "duplicate",
        "suppressed",
        "already enrolled",
        "in another sequence",
        "in an exclusive sequence",
    }:
        return "email"
    return None
