"""Enrollment and operations as a rep runs them: the CLI as a subprocess, on both databases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
OWNER = "ana.reyes@northwind.example"
# A Monday morning in Chicago; the intro emails are due right away.
START = "2026-03-02T15:00:00+00:00"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


Run = Callable[..., Result]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for folder in ("sequences", "templates"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    shutil.copy(REPO / "sequencer.yaml", tmp_path / "sequencer.yaml")
    return tmp_path


def make_runner(project: Path, url: str) -> Run:
    def run(*args: str, now: str | None = START, input: str | None = None) -> Result:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
        env.update(NO_COLOR="1", SEQUENCER_DATABASE_URL=url, COLUMNS="200")
        if now:
            env["SEQUENCER_NOW"] = now
        proc = subprocess.run(
            [sys.executable, "-m", "sequencer", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def run(project: Path, database_url: str) -> Run:
    return make_runner(project, database_url)


def test_commands_refuse_an_unmigrated_database(project: Path, empty_database_url: str) -> None:
    run = make_runner(project, empty_database_url)
    for args in (["status"], ["timeline", "x@y.example"], ["tasks"]):
        result = run(*args)
        assert result.code == 1
        assert "run `sequencer db upgrade`" in result.err
    created = run("db", "upgrade")
    assert created.code == 0 and "Created the Sequencer tables" in created.out
    again = run("db", "upgrade")
    assert "nothing to do" in again.out
    assert run("status").code == 0


def test_enroll_reports_bad_rows_and_enrolls_the_rest(run: Run) -> None:
    result = run(
        "enroll",
        "cold-outbound",
        str(EXAMPLES / "prospects-with-mistakes.csv"),
        "--owner",
        OWNER,
        "--json",
    )
    assert result.code == 0, result.err
    report = result.json()
    assert isinstance(report, dict)
    assert report["rows"] == 6
    assert report["enrolled"] == 2
    reasons = {row["line"]: row["reason"] for row in report["skipped_rows"]}
    assert set(reasons) == {3, 4, 5, 6}
    assert "invalid email" in reasons[3]
    assert "missing email" in reasons[4]
    assert "same email as line 2" in reasons[5]
    assert "Mars/Olympus_Mons" in reasons[6]


def test_rerunning_the_same_file_changes_nothing(run: Run) -> None:
    csv_file = str(EXAMPLES / "prospects.csv")
    first = run("enroll", "cold-outbound", csv_file, "--owner", OWNER)
    assert first.code == 0
    assert "Enrolled 10 of 10 rows into cold-outbound" in first.out
    before = run("status", "--json").json()
    again = run("enroll", "cold-outbound", csv_file, "--owner", OWNER, "--json").json()
    assert isinstance(again, dict)
    assert again["enrolled"] == 0
    assert again["skipped_by_reason"] == {"already enrolled": 10}
    assert run("status", "--json").json() == before


def test_dry_run_changes_nothing(run: Run) -> None:
    result = run(
        "enroll", "cold-outbound", str(EXAMPLES / "prospects.csv"), "--owner", OWNER, "--dry-run"
    )
    assert "Would enroll 10 of 10 rows" in result.out
    status = run("status", "--json").json()
    assert isinstance(status, dict)
    assert status["enrollments"] == {}


def test_status_and_timeline_after_enrolling(run: Run) -> None:
    run("enroll", "cold-outbound", str(EXAMPLES / "prospects.csv"), "--owner", OWNER)
    run(
        "enroll",
        "inbound-demo-request",
        str(EXAMPLES / "prospects-with-mistakes.csv"),
        "--owner",
        OWNER,
    )
    status = run("status", "--json").json()
    assert isinstance(status, dict)
    assert status["enrollments"]["cold-outbound"] == {"active": 10}
    assert status["enrollments"]["inbound-demo-request"] == {"active": 2}
    text = run("status").out
    assert "cold-outbound" in text and "Due in the next hour" in text

    timeline = run("timeline", "Dana.Kim@globex.example", "--json").json()
    assert isinstance(timeline, dict)
    assert timeline["prospect"]["timezone"] == "America/Chicago"
    (enrollment,) = timeline["enrollments"]
    assert enrollment["state"] == "active"
    assert enrollment["next"]["step"] == "intro"
    # Due right away: 09:00 in Chicago is inside the 08:30-11:30 window.
    assert enrollment["next"]["due"] == "2026-03-02T09:00:00-06:00"
    assert [e["kind"] for e in timeline["events"]] == ["enrolled"]
    human = run("timeline", "dana.kim@globex.example").out
    assert "times in America/Chicago" in human
    assert "Mon 02 Mar 2026 09:00 CST" in human
    missing = run("timeline", "nobody@nowhere.example")
    assert missing.code == 1 and "no prospect" in missing.err


def test_pause_resume_stop_and_suppress(run: Run) -> None:
    run("enroll", "cold-outbound", str(EXAMPLES / "prospects.csv"), "--owner", OWNER)
    paused = run("pause", "dana.kim@globex.example")
    assert paused.code == 0 and "Paused 1 enrollment" in paused.out
    again = run("pause", "dana.kim@globex.example")
    assert again.code == 1 and "no active enrollment" in again.err
    # Ten days later the intro goes out in the next window, not in the past.
    resumed = run("resume", "dana.kim@globex.example", now="2026-03-12T23:00:00+00:00")
    assert resumed.code == 0
    timeline = run("timeline", "dana.kim@globex.example", "--json").json()
    assert isinstance(timeline, dict)
    due = datetime.fromisoformat(timeline["enrollments"][0]["next"]["due"])
    assert due == datetime.fromisoformat("2026-03-13T08:30:00-05:00")  # CDT since 8 March
    stopped = run("stop", "marcus.lee@initech.example")
    assert "Stopped 1 enrollment" in stopped.out and "1 pending touch cancelled" in stopped.out
    suppressed = run("suppress", "@umbrella.example", "--note", "asked by legal")
    assert "Suppressed @umbrella.example" in suppressed.out
    assert "Stopped 1 enrollment" in suppressed.out
    status = run("status", "--json").json()
    assert isinstance(status, dict)
    assert status["enrollments"]["cold-outbound"] == {"active": 8, "stopped": 2}
    # A suppressed domain is skipped at the next import, with the reason.
    report = run(
        "enroll", "post-sale-thank-you", str(EXAMPLES / "prospects.csv"), "--owner", OWNER, "--json"
    ).json()
    assert isinstance(report, dict)
    assert any("suppressed: @umbrella.example" in r["reason"] for r in report["skipped_rows"])
    bad = run("suppress", "not a domain")
    assert bad.code == 2


def test_archive_cancels_pending_touches(run: Run) -> None:
    run("enroll", "cold-outbound", str(EXAMPLES / "prospects.csv"), "--owner", OWNER)
    refused = run("archive", "cold-outbound", input="n\n")
    assert refused.code == 1
    result = run("archive", "cold-outbound", "--yes")
    assert result.code == 0
    assert "10 enrollments stopped, 10 pending touches cancelled" in result.out
    again = run("enroll", "cold-outbound", str(EXAMPLES / "prospects.csv"), "--owner", OWNER)
    assert again.code == 1 and "archived" in again.err


def test_tasks_list_export_and_done(run: Run, project: Path) -> None:
    # A sequence whose first step is a call, so a task exists right after enrolling.
    (project / "sequences" / "call-first.yaml").write_text(
        """\
description: Call first, then email.
schedule:
  timezone: prospect
  fallback_timezone: America/New_York
  hours: "09:00-17:00"
steps:
  - id: call
    call: call-cold-first
    title: Call {{ prospect.first_name | default('them') }} at {{ prospect.company | default('?') }}
  - id: email
    delay: 1 business day
    email: cold-intro
"""
    )
    run("enroll", "call-first", str(EXAMPLES / "prospects.csv"), "--owner", OWNER)
    listed = run("tasks", "--due", "all", "--owner", OWNER, "--json", "--ics", "tasks.ics").json()
    assert isinstance(listed, list) and len(listed) == 10
    dana = next(t for t in listed if t["prospect"] == "dana.kim@globex.example")
    assert dana["title"] == "Call Dana at Globex Logistics"
    assert "Dana" in dana["script"]
    ics = (project / "tasks.ics").read_bytes()
    assert ics.startswith(b"BEGIN:VCALENDAR\r\n")
    assert ics.count(b"BEGIN:VEVENT") == 10
    assert b"Call Dana at Globex Logistics" in ics
    nobody = run("tasks", "--due", "all", "--owner", "someone@else.example")
    assert "No open tasks" in nobody.out

    done = run("task", "done", str(dana["id"]), "--outcome", "voicemail", "--note", "left VM")
    assert done.code == 0, done.err
    assert "Next: email (email)" in done.out
    twice = run("task", "done", str(dana["id"]), "--outcome", "voicemail")
    assert twice.code == 1 and "already done" in twice.err
    timeline = run("timeline", "dana.kim@globex.example", "--json").json()
    assert isinstance(timeline, dict)
    kinds = [e["kind"] for e in timeline["events"]]
    assert kinds == ["enrolled", "task_created", "task_done"]
    assert timeline["enrollments"][0]["next"]["step"] == "email"
    assert "left VM" in run("timeline", "dana.kim@globex.example").out
    bad_outcome = run("task", "done", str(dana["id"]), "--outcome", "maybe")
    assert bad_outcome.code == 2


def test_enroll_errors_are_clear(run: Run, project: Path) -> None:
    unknown = run("enroll", "cold-outbond", str(EXAMPLES / "prospects.csv"), "--owner", OWNER)
    assert unknown.code == 1 and "did you mean 'cold-outbound'?" in unknown.err
    missing = run("enroll", "cold-outbound", "nope.csv", "--owner", OWNER)
    assert missing.code == 1 and "nope.csv" in missing.err
    no_email = project / "no-email.csv"
    no_email.write_text("Name,Company\nDana,Globex\n")
    result = run("enroll", "cold-outbound", str(no_email), "--owner", OWNER)
    assert result.code == 1 and "no email column" in result.err
    bad_owner = run("enroll", "cold-outbound", str(EXAMPLES / "prospects.csv"), "--owner", "ana")
    assert bad_owner.code == 1 and "--owner" in bad_owner.err


def test_an_undone_task_moves_on_by_itself(run: Run, project: Path) -> None:
    (project / "sequences" / "call-first.yaml").write_text(
        "steps:\n  - id: call\n    call: call-cold-first\n"
        "  - id: email\n    delay: 1 day\n    email: cold-intro\n"
    )
    run("enroll", "call-first", str(EXAMPLES / "prospects.csv"), "--owner", OWNER)
    assert len(run("tasks", "--due", "all", "--json").json()) == 10  # type: ignore[arg-type]
    # Two business days after they were due, nobody did them: they move on by themselves.
    later = run("tasks", "--due", "all", "--json", now="2026-03-06T23:00:00+00:00").json()
    assert later == []
    timeline = run("timeline", "dana.kim@globex.example", "--json").json()
    assert isinstance(timeline, dict)
    assert [e["kind"] for e in timeline["events"]][-1] == "task_expired"
    assert timeline["enrollments"][0]["next"]["step"] == "email"


def test_settling_a_touch_needs_a_decision_and_an_unknown_touch(run: Run) -> None:
    enrolled = run("enroll", "cold-outbound", str(EXAMPLES / "prospects.csv"), "--owner", OWNER)
    assert enrolled.code == 0
    undecided = run("touch", "settle", "1")
    assert undecided.code == 2 and "--arrived or --resend" in undecided.err
    missing = run("touch", "settle", "999999", "--arrived")
    assert missing.code == 1 and "no touch 999999" in missing.err
    scheduled = run("touch", "settle", "1", "--resend")
    assert scheduled.code == 1 and "not unknown" in scheduled.err
