"""The web layer's pure parts: API prospect rows, the one-click body, masking, the exposition."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from web_support import parse_prometheus

from sequencer.core.prospects import ProspectRow, RowProblem
from sequencer.web.metrics import Exposition
from sequencer.web.pages import mask_email
from sequencer.web.rows import one_line, parse_prospects, skipped_field
from sequencer.web.unsubscribe import one_click


@given(st.text(max_size=200))
def test_one_line_leaves_no_line_break_or_control_character(value: str) -> None:
    cleaned = one_line(value)
    assert not any(ch in cleaned for ch in "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", cleaned)
    assert cleaned == cleaned.strip()
    assert len(cleaned.splitlines()) <= 1


@given(
    st.dictionaries(
        st.sampled_from(["email", "first_name", "company", "title", "industry", "Name"]),
        st.one_of(st.text(max_size=60), st.integers(), st.floats(allow_nan=False), st.none()),
    )
)
def test_any_api_prospect_becomes_a_clean_row_or_a_located_problem(item: dict[str, object]) -> None:
    (row,), _ = parse_prospects([item])
    if isinstance(row, ProspectRow):
        for value in row.fields.values():
            assert "\n" not in value and "\r" not in value
    else:
        assert isinstance(row, RowProblem) and row.line == 0 and row.reason


def test_api_rows_use_the_csv_spellings_and_name_the_field_at_fault() -> None:
    rows, fields = parse_prospects(
        [
            {"E-mail": "<Dana.Kim@Globex.example>", "Full Name": "Kim, Dana", "Time Zone": "PST"},
            {"email": "dana@globex.example", "notes": "x" * 1001},
            {"email": "dana@globex.example", "nested": {"a": 1}},
            {"email": "dana@globex.example", "vip": True},
        ]
    )
    first = rows[0]
    assert isinstance(first, ProspectRow)
    assert first.email == "dana.kim@globex.example"
    assert first.fields["first_name"] == "Dana" and first.fields["last_name"] == "Kim"
    assert first.fields["timezone"] == "America/Los_Angeles"
    assert fields == {1: "notes", 2: "nested", 3: "vip"}


@pytest.mark.parametrize(
    ("reason", "field"),
    [
        ("missing field: the templates need industry, title", "industry"),
        ("duplicate: same email as line 3", "email"),
        ("suppressed: dana@x.example (unsubscribed)", "email"),
        ("already enrolled: active in this sequence", "email"),
        ("something else entirely", None),
    ],
)
def test_enrollment_reasons_name_their_field(reason: str, field: str | None) -> None:
    assert skipped_field(reason) == field


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click", True),
        ("", b"List-Unsubscribe=One-Click", True),
        ("application/x-www-form-urlencoded", b"a=b&List-Unsubscribe=one-click", True),
        ("application/x-www-form-urlencoded", b"List-Unsubscribe=Maybe", False),
        ("application/x-www-form-urlencoded", b"", False),
        ("application/x-www-form-urlencoded", b"\xff\xfe\x00", False),
        (
            "multipart/form-data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            b"One-Click\r\n--XyZ--\r\n",
            True,
        ),
        (
            "multipart/form-data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="other"\r\n\r\n'
            b"One-Click\r\n--XyZ--\r\n",
            False,
        ),
        ("multipart/form-data", b"garbage without a boundary", False),
    ],
)
def test_one_click_body(content_type: str, body: bytes, expected: bool) -> None:
    assert one_click(content_type, body) is expected


def test_masking_keeps_the_domain_and_hides_the_mailbox() -> None:
    assert mask_email("dana.kim@globex.example") == "da•••@globex.example"
    assert mask_email("al@x.example") == "a•••@x.example"
    assert "dana.kim" not in mask_email("dana.kim@globex.example")


def test_label_values_and_help_are_escaped() -> None:
    out = Exposition()
    out.family("x_total", "counter", 'help with \\ and\nnewline "quotes"')
    out.sample("x_total", 3, {"kind": 'a"b\\c\nd'})
    families = parse_prometheus(out.text())
    assert families["x_total"].value(kind='a\\"b\\\\c\\nd') == 3
