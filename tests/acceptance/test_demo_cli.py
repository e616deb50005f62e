"""`sequencer demo` as a newcomer runs it: from an empty folder, no configuration, one command."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from sequencer.core.inbound import InboundKind, classify


@dataclass(frozen=True)
class Run:
    out: Path
    code: int
    stdout: str
    stderr: str


def run_demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    env.update(NO_COLOR="1", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "sequencer", "demo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One full three-week run, as fast as it goes, in an empty folder."""
    cwd = tmp_path_factory.mktemp("newcomer")
    done = run_demo(cwd, "--duration", "0")
    return Run(cwd / "sequencer-demo", done.returncode, done.stdout, done.stderr)


@pytest.mark.timeout(300)
def test_the_demo_runs_to_the_end_and_every_promise_holds(demo_run: Run) -> None:
    assert demo_run.code == 0, demo_run.stdout[-3000:] + demo_run.stderr[-3000:]
    assert "✗" not in demo_run.stdout
    assert demo_run.stdout.count("✓") == 4
    for moment in ("REPLY", "BOUNCE", "UNSUB", "away", "paused", "resumed", "task not done"):
        assert moment in demo_run.stdout, moment
    assert "internal error" not in demo_run.stderr


@pytest.mark.timeout(300)
def test_every_email_is_a_real_eml_file(demo_run: Run) -> None:
    emails = sorted((demo_run.out / "emails").glob("*.eml"))
    assert len(emails) >= 25
    assert f"{len(emails)} emails as sent" in demo_run.stdout
    ids = set()
    for path in emails:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert message["From"] and message["To"] and message["Subject"] and message["Date"]
        assert message["List-Unsubscribe"], path.name
        assert message.get_body(preferencelist=("plain",)) is not None
        ids.add(str(message["Message-ID"]))
    assert len(ids) == len(emails)


@pytest.mark.timeout(300)
def test_the_inbound_files_are_what_the_classifier_acted_on(demo_run: Run) -> None:
    inbound = sorted((demo_run.out / "inbound").glob("*.eml"))
    kinds = {classify(p.read_bytes(), today=date(2026, 3, 10)).kind for p in inbound}
    assert {
        InboundKind.REPLY,
        InboundKind.OUT_OF_OFFICE,
        InboundKind.BOUNCE,
        InboundKind.UNSUBSCRIBE,
    } <= kinds


@pytest.mark.timeout(300)
def test_the_report_is_written_as_html(demo_run: Run) -> None:
    html = demo_run.out / "report.html"
    assert html.is_file()
    text = html.read_text(encoding="utf-8")
    assert "<svg" in text and "cold-outbound" in text


def test_the_demo_refuses_to_write_into_a_folder_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    done = run_demo(tmp_path, "--duration", "0", "--days", "1", "--out", str(mine))
    assert done.returncode == 1
    assert "was not made by `sequencer demo`" in done.stderr
    assert (mine / "keep.txt").read_text() == "mine"
