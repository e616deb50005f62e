"""The out-of-office search first looks for any of its words, and skips a text that holds
none: that must never skip a text the full pattern would match, whatever its case or spacing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.core import autoreplies
from sequencer.core.autoreplies import out_of_office_phrase


def _branches(pattern: re.Pattern[str]) -> list[str]:
    """The pattern's top-level alternatives, as pattern text."""
    parts, depth, current, escaped = [], 0, "", False
    for char in pattern.pattern:
        if escaped:
            current, escaped = current + char, False
            continue
        if char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


BRANCHES = _branches(autoreplies._AWAY)


def _full_search(text: str) -> str | None:
    match = autoreplies._AWAY.search(text[:3000])
    return " ".join(match.group(0).split()) if match else None


def test_the_pattern_splits_into_all_its_alternatives() -> None:
    assert len(BRANCHES) == 47
    assert all(re.compile(b, autoreplies._AWAY.flags) for b in BRANCHES)


@pytest.mark.parametrize("branch", BRANCHES, ids=[b.strip()[:30] for b in BRANCHES])
def test_no_text_matching_an_alternative_is_skipped(branch: str) -> None:
    @settings(max_examples=60, deadline=None)
    @given(st.from_regex(re.compile(branch, autoreplies._AWAY.flags)))
    def check(text: str) -> None:
        assert out_of_office_phrase(text) == _full_search(text)

    check()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_gives_what_the_full_search_gives(text: str) -> None:
    assert out_of_office_phrase(text) == _full_search(text)


@pytest.mark.parametrize(
    "text",
    [
        "I AM\u00a0AWAY until Monday",  # no-break space between the words
        "İ am away this week",  # Turkish capital dotted I
        "ı'm away",  # dotless i
        "ON SABBATİCAL",
        "ON ſabbatical",  # long s
        "Ich bin AUSSER HAUS",
        "Je suis EN CONGÉS",
        "我现在不在办公室",
    ],
)
def test_case_and_spacing_variants_are_found(text: str) -> None:
    assert _full_search(text) is not None
    assert out_of_office_phrase(text) == _full_search(text)
