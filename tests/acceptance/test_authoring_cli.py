"""The authoring loop as a marketer runs it: `sequencer validate` and `sequencer preview`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

import holidays
import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example project, so tests can break it."""
    shutil.copytree(REPO / "sequences", tmp_path / "sequences")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy(REPO / "sequencer.yaml", tmp_path / "sequencer.yaml")
    return tmp_path


@pytest.fixture
def run(project: Path) -> Run:
    def run(*args: str, cwd: Path | None = None) -> Result:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
        env["NO_COLOR"] = "1"
        proc = subprocess.run(
            [sys.executable, "-m", "sequencer", *args],
            cwd=cwd or project,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.out + result.err


# --- validate ----------------------------------------------------------------------------------


def test_examples_validate_clean(run: Run) -> None:
    result = run("validate")
    assert result.code == 0, result.out + result.err
    assert "OK: 3 sequences" in result.out


def test_examples_validate_clean_as_json(run: Run) -> None:
    result = run("validate", "--json")
    assert result.code == 0
    report = json.loads(result.out)
    assert report["ok"] is True
    assert report["problems"] == []
    assert set(report["sequences"]) == {
        "cold-outbound",
        "inbound-demo-request",
        "post-sale-thank-you",
    }


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def test_validate_pinpoints_every_kind_of_mistake(project: Path, run: Run) -> None:
    cold = project / "sequences" / "cold-outbound.yaml"
    replace_in(cold, "email: cold-intro", "email: cold-intr")
    replace_in(cold, "timezone: prospect", "timezone: prospect\n  holiday: [US]")
    replace_in(cold, "fallback_timezone: America/New_York", "fallback_timezone: America/NewYork")
    replace_in(cold, "holidays: [US]", "holidays: [UK]")
    replace_in(cold, "delay: 2 business days", "delay: 2 buisness days")
    replace_in(cold, "- id: call-2", "- id: call-1")
    replace_in(cold, "email: {rotate: value-add}", "email: {rotate: valueadd}")
    result = run("validate", "--json")
    assert result.code == 1
    assert_no_traceback(result)
    problems = json.loads(result.out)["problems"]
    by_code = {p["code"]: p for p in problems}
    expected = {
        "unknown-template": ("cold-intr", "did you mean 'cold-intro'?"),
        "unknown-key": ("holiday", "did you mean 'holidays'?"),
        "unknown-timezone": ("America/NewYork", "did you mean 'America/New_York'?"),
        "unknown-holiday-country": ("UK", "did you mean 'GB'?"),
        "bad-delay": ("buisness", "business days"),
        "duplicate-step": ("call-1", "own id"),
        "unknown-pool": ("valueadd", "did you mean 'value-add'?"),
    }
    for code, (word, hint) in expected.items():
        assert code in by_code, f"{code} not reported: {problems}"
        problem = by_code[code]
        assert problem["path"] == "sequences/cold-outbound.yaml"
        assert word in problem["message"] or word in (problem["hint"] or "")
        assert hint in (problem["hint"] or ""), problem
        assert problem["column"] is not None
    assert by_code["unknown-template"]["line"] == line_of(cold, "email: cold-intr")
    assert by_code["unknown-timezone"]["line"] == line_of(cold, "America/NewYork")


def test_validate_text_output_is_path_line_col_message_and_hint(project: Path, run: Run) -> None:
    cold = project / "sequences" / "cold-outbound.yaml"
    replace_in(cold, "email: cold-intro", "email: cold-intr")
    result = run("validate")
    assert result.code == 1
    assert_no_traceback(result)
    line = line_of(cold, "email: cold-intr")
    assert (
        f"sequences/cold-outbound.yaml:{line}:12: error: step 'intro': unknown template "
        "'cold-intr'" in result.out
    )
    assert "    hint: did you mean 'cold-intro'?" in result.out
    assert "1 error" in result.out


def test_validate_reports_yaml_syntax_errors_without_traceback(project: Path, run: Run) -> None:
    cold = project / "sequences" / "cold-outbound.yaml"
    replace_in(cold, "  days: [mon, tue, wed, thu, fri]", "  days: [mon, tue, wed, thu, fri")
    result = run("validate", "sequences/cold-outbound.yaml")
    assert result.code == 1
    assert_no_traceback(result)
    assert "sequences/cold-outbound.yaml:" in result.out
    assert "yaml" not in result.err.lower()


def test_validate_template_problems_point_into_the_template(project: Path, run: Run) -> None:
    intro = project / "templates" / "cold-intro.j2"
    text = intro.read_text()
    text = text.replace("{{ footer }}", "{{ prospect.industy }}\n{% if %}")
    intro.write_text(text)
    result = run("validate", "--json")
    assert result.code == 1
    problems = json.loads(result.out)["problems"]
    mine = [p for p in problems if p["path"] == "templates/cold-intro.j2"]
    assert any(p["code"] == "template-syntax" for p in mine), problems
    syntax = next(p for p in mine if p["code"] == "template-syntax")
    assert syntax["line"] == line_of(intro, "{% if %}")


def test_validate_flags_fields_no_prospect_defines(project: Path, run: Run) -> None:
    intro = project / "templates" / "cold-intro.j2"
    replace_in(intro, "{{ footer }}", "We saw {{ prospect.industy }}.\n\n{{ footer }}")
    result = run("validate", "--json")
    assert result.code == 1
    problem = next(p for p in json.loads(result.out)["problems"] if p["code"] == "undefined-field")
    assert problem["path"] == "templates/cold-intro.j2"
    assert problem["line"] == line_of(intro, "prospect.industy")
    assert "'industry'" in problem["hint"]


def test_validate_compliance_lint(project: Path, run: Run) -> None:
    intro = project / "templates" / "cold-intro.j2"
    replace_in(intro, "{{ footer }}", "")
    config = project / "sequencer.yaml"
    lines = [line for line in config.read_text().splitlines() if "postal_address" not in line]
    config.write_text("\n".join(lines) + "\n")
    result = run("validate", "--json")
    assert result.code == 1
    codes = [p["code"] for p in json.loads(result.out)["problems"]]
    assert "no-unsubscribe" in codes
    assert "no-postal-address" in codes


def test_validate_one_file_by_path_and_unknown_path(run: Run) -> None:
    assert run("validate", "sequences/post-sale-thank-you.yaml").code == 0
    assert run("validate", "templates/cold-intro.j2").code == 0
    missing = run("validate", "sequences/nope.yaml")
    assert missing.code == 1
    assert "no such file" in missing.err


def test_validate_in_an_empty_folder_says_what_to_do(
    run: Run, tmp_path_factory: pytest.TempPathFactory
) -> None:
    empty = tmp_path_factory.mktemp("empty")
    result = run("validate", cwd=empty)
    assert result.code == 1
    assert "nothing to validate" in result.err


# --- preview -----------------------------------------------------------------------------------

PROSPECT = [
    "--prospect",
    "email=dana@globex.example",
    "--prospect",
    "first_name=Dana",
    "--prospect",
    "company=Globex",
]


def preview_json(run: Run, *args: str) -> list[dict[str, object]]:
    result = run("preview", *args, "--json")
    assert result.code == 0, result.out + result.err
    touches = json.loads(result.out)
    assert isinstance(touches, list)
    return touches


def local_window_ok(due: datetime, ranges: list[tuple[time, time]]) -> bool:
    wall = due.timetz().replace(tzinfo=None)
    return any(start <= wall < end for start, end in ranges)


def test_preview_json_keeps_every_touch_in_the_window_across_dst_and_holidays(run: Run) -> None:
    # New York: DST ends 2026-11-01; Veterans Day 2026-11-11 and Thanksgiving 2026-11-26.
    touches = preview_json(
        run,
        "cold-outbound",
        *PROSPECT,
        "--prospect",
        "timezone=America/New_York",
        "--start",
        "2026-10-26T07:00",
    )
    assert len(touches) == 10
    us = holidays.country_holidays("US", years=[2026, 2027])
    windows = [(time(8, 30), time(11, 30)), (time(13, 30), time(16, 30))]
    offsets = set()
    previous = None
    for touch in touches:
        for key in ("step", "channel", "due", "template", "subject", "body"):
            assert key in touch
        due = datetime.fromisoformat(str(touch["due"]))
        assert due.utcoffset() is not None
        offsets.add(due.utcoffset())
        assert due.weekday() < 5, touch
        assert due.date() not in us, touch
        assert local_window_ok(due, windows), touch
        if previous is not None:
            assert due > previous
        previous = due
    # The timeline crossed the DST change and stayed in local office hours.
    assert len(offsets) == 2
    emails = [t["template"] for t in touches if t["channel"] == "email"]
    assert len(emails) == len(set(emails)), "a template was repeated"
    rotated = [t for t in touches if t["rotation"]]
    assert len(rotated) >= 4


def test_preview_follow_ups_thread_under_the_first_email(run: Run) -> None:
    touches = preview_json(run, "cold-outbound", *PROSPECT, "--start", "2026-03-02T09:00-05:00")
    emails = [t for t in touches if t["channel"] == "email"]
    first = emails[0]
    assert not str(first["subject"]).startswith("Re:")
    replies = [t for t in emails[1:] if t["thread"] == first["step"]]
    assert replies and all(t["subject"] == f"Re: {first['subject']}" for t in replies)
    new_thread = [t for t in emails[1:] if t["thread"] is None]
    assert new_thread, "the sequence has a step that starts a new thread"


def test_preview_renders_bodies_with_prospect_fields_and_defaults(run: Run) -> None:
    touches = preview_json(run, "cold-outbound", *PROSPECT, "--start", "2026-03-02T09:00")
    intro = touches[0]
    assert "Dana" in str(intro["body"])
    assert "Globex" in str(intro["subject"])
    bare = preview_json(run, "cold-outbound", "--start", "2026-03-02T09:00")
    assert "Hi there" in str(bare[0]["body"])


def test_preview_immediate_anytime_step_goes_out_at_night(run: Run) -> None:
    touches = preview_json(
        run,
        "inbound-demo-request",
        *PROSPECT,
        "--prospect",
        "timezone=Europe/Berlin",
        "--start",
        "2026-03-04T23:40",
    )
    first = datetime.fromisoformat(str(touches[0]["due"]))
    assert first == datetime.fromisoformat("2026-03-04T23:40:00+01:00")


def test_preview_accepts_a_name_or_a_path(run: Run, project: Path) -> None:
    by_name = preview_json(run, "post-sale-thank-you", "--start", "2026-03-02T09:00")
    by_path = preview_json(run, "sequences/post-sale-thank-you.yaml", "--start", "2026-03-02T09:00")
    elsewhere = preview_json(
        run,
        str(project / "sequences" / "post-sale-thank-you.yaml"),
        "--start",
        "2026-03-02T09:00",
    )
    assert by_name == by_path == elsewhere


def test_preview_unknown_sequence_suggests_the_name(run: Run) -> None:
    result = run("preview", "cold-outbond")
    assert result.code == 1
    assert_no_traceback(result)
    assert "did you mean 'cold-outbound'?" in result.err


def test_preview_bad_arguments(run: Run) -> None:
    zone = run("preview", "cold-outbound", "--prospect", "timezone=Europe/Berln")
    assert zone.code == 2
    assert "did you mean 'Europe/Berlin'?" in zone.err
    pair = run("preview", "cold-outbound", "--prospect", "first_name")
    assert pair.code == 2 and "KEY=VALUE" in pair.err
    start = run("preview", "cold-outbound", "--start", "next tuesday")
    assert start.code == 2 and "ISO 8601" in start.err
    for result in (zone, pair, start):
        assert_no_traceback(result)


def test_validate_from_a_subfolder_finds_the_project(run: Run, project: Path) -> None:
    result = run("validate", cwd=project / "templates")
    assert result.code == 0
    assert "3 sequences" in result.out


def test_preview_reports_a_field_with_no_value_and_no_default(run: Run, project: Path) -> None:
    intro = project / "templates" / "cold-intro.j2"
    replace_in(intro, "{{ footer }}", "Your {{ prospect.industry }} peers.\n\n{{ footer }}")
    result = run("preview", "cold-outbound", "--start", "2026-03-02T09:00")
    assert result.code == 1
    assert_no_traceback(result)
    assert "industry" in result.err
    with_field = run(
        "preview", "cold-outbound", "--prospect", "industry=freight", "--start", "2026-03-02T09:00"
    )
    assert with_field.code == 0, with_field.err
    assert "Your freight peers." in with_field.out


def test_preview_refuses_a_broken_sequence(run: Run, project: Path) -> None:
    replace_in(project / "sequences" / "cold-outbound.yaml", "email: cold-intro", "email: nope")
    result = run("preview", "cold-outbound")
    assert result.code == 1
    assert "unknown template 'nope'" in result.out
    assert_no_traceback(result)


def test_preview_business_days_skip_weekends_and_holidays_exactly(run: Run, project: Path) -> None:
    (project / "sequences" / "daily.yaml").write_text(
        """\
description: One touch a business day.
schedule:
  timezone: America/New_York
  hours: "09:00-10:00"
  holidays: [US]
limits:
  min_gap: none
  max_per_week: none
steps:
  - id: a
    email: cold-intro
  - id: b
    delay: 1 business day
    task: {script: "Check in"}
  - id: c
    delay: 1 business day
    task: {script: "Check in"}
  - id: d
    delay: 1 business day
    task: {script: "Check in"}
"""
    )
    touches = preview_json(run, "daily", "--start", "2026-11-09T12:00")
    days = [datetime.fromisoformat(str(t["due"])).date() for t in touches]
    # Mon after hours -> Tue; Wed 11 Nov is Veterans Day; then Thu, Fri.
    assert days == [date(2026, 11, 10), date(2026, 11, 12), date(2026, 11, 13), date(2026, 11, 16)]
    assert all(datetime.fromisoformat(str(t["due"])).hour == 9 for t in touches)


def test_human_preview_shows_local_times(run: Run) -> None:
    result = run(
        "preview",
        "cold-outbound",
        *PROSPECT,
        "--prospect",
        "timezone=Asia/Tokyo",
        "--start",
        "2026-03-02T09:00",
        "--brief",
    )
    assert result.code == 0, result.err
    assert "times in Asia/Tokyo" in result.out
    assert "JST" in result.out
    assert "Subject: Re: " in result.out
