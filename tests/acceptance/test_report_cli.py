"""`sequencer report` as a rep runs it: the CLI as a subprocess, on both databases, after
enrolling the example prospects and letting `sequencer run` send the first emails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from servers.smtp import RecordingSMTPServer

REPO = Path(__file__).resolve().parents[2]
PROSPECTS = REPO / "docs" / "examples" / "prospects.csv"
OWNER = "ana.reyes@northwind.example"
# Monday 15:00 UTC: inside the sending window in Chicago, New York, London, Berlin, Rome and
# Lagos; too early or too late for the other four prospects, whose intros wait.
START = "2026-03-02T15:00:00+00:00"


@dataclass
class Result:
    code: int
    out: str
    err: str


class Runner:
    def __init__(self, root: Path, url: str, smtp_port: int) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
        self.env.update(
            NO_COLOR="1",
            COLUMNS="160",
            SEQUENCER_DATABASE_URL=url,
            SEQUENCER_NOW=START,
            SEQUENCER_SECRET="acceptance-secret-0123456789",
        )
        for folder in ("sequences", "templates"):
            shutil.copytree(REPO / folder, root / folder)
        config = yaml.safe_load((REPO / "sequencer.yaml").read_text())
        for box in config["mailboxes"]:
            box["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none"}
            box["min_spacing"] = "0 minutes"
        (root / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def __call__(self, *args: str) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "sequencer", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def send_due(self, smtp: RecordingSMTPServer, count: int) -> None:
        """`sequencer run` until ``count`` emails reached the SMTP server, then SIGTERM."""
        runner = subprocess.Popen(
            [sys.executable, "-m", "sequencer", "run"],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            smtp.wait_for(count, timeout=60)
        finally:
            runner.send_signal(signal.SIGTERM)
            _out, err = runner.communicate(timeout=60)
        assert runner.returncode == 0, err


@pytest.fixture
def run(tmp_path: Path, database_url: str, smtp: RecordingSMTPServer) -> Runner:
    return Runner(tmp_path, database_url, smtp.port)


def test_a_report_after_the_first_emails(run: Runner, smtp: RecordingSMTPServer) -> None:
    empty = run("report")
    assert empty.code == 0, empty.err
    assert "No enrollments yet" in empty.out

    assert run("enroll", "cold-outbound", str(PROSPECTS), "--owner", OWNER).code == 0
    assert run("stop", "marcus.lee@initech.example").code == 0
    run.send_due(smtp, 5)  # Chicago, London, Berlin, Rome, Lagos (New York was stopped)

    text = run("report", "cold-outbound")
    assert text.code == 0, text.err
    assert "cold-outbound" in text.out
    assert "10 enrollments: 9 active, 0 paused, 0 finished, 1 stopped" in text.out
    assert "Stopped because: manual 1" in text.out
    assert "5 people emailed, 5 emails sent; 0 replied (0% of people emailed)" in text.out
    intro = next(line for line in text.out.splitlines() if line.split()[:2] == ["1", "intro"])
    # sent 5, replied 0, rate 0%, ..., and 4 still to come
    assert intro.split()[2:6] == ["cold-intro", "5", "0", "0%"]
    assert intro.split()[-1] == "4"
    assert "Leads not being worked: 0" in text.out
    assert "Touches that need a human: 0 failed, 0 unknown" in text.out

    data = json.loads(run("report", "--json").out)
    (sequence,) = data["sequences"]
    assert sequence["name"] == "cold-outbound"
    assert (sequence["enrollments"], sequence["contacted"], sequence["sent"]) == (10, 5, 5)
    assert sequence["states"] == {"active": 9, "paused": 0, "finished": 0, "stopped": 1}
    steps = {s["step"]: s for s in sequence["steps"]}
    assert (steps["intro"]["sent"], steps["intro"]["pending"], steps["intro"]["cancelled"]) == (
        5,
        4,
        1,
    )
    assert steps["intro"]["reply_rate"] == 0.0
    assert steps["call-1"]["pending"] == 5  # the next step, planned once the intro went out
    assert steps["value-1"]["sent"] == 0 and steps["value-1"]["reply_rate"] is None
    assert data["templates"] == [
        {
            "template": "cold-intro",
            "title": "Cold outbound intro",
            "value_add": False,
            "sent": 5,
            "replied": 0,
            "reply_rate": 0.0,
        }
    ]
    assert data["leads_not_worked"] == {"total": 0, "listed": []}
    assert data["needs_attention"] == {"failed": 0, "unknown": 0, "listed": []}

    # By path too, the way other commands take a sequence.
    by_path = run("report", "sequences/cold-outbound.yaml", "--json")
    assert json.loads(by_path.out)["sequence"] == "cold-outbound"


def test_html_is_one_page_that_parses(run: Runner, tmp_path: Path) -> None:
    assert run("enroll", "cold-outbound", str(PROSPECTS), "--owner", OWNER).code == 0
    target = tmp_path / "out" / "report.html"
    missing_folder = run("report", "--html", str(target))
    assert missing_folder.code == 1 and f"cannot write {target}" in missing_folder.err
    target.parent.mkdir()
    result = run("report", "--html", str(target))
    assert result.code == 0, result.err
    assert f"Wrote {target} ({target.resolve().as_uri()})" in result.out
    page = target.read_text(encoding="utf-8")
    tags: list[str] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)

    Tags().feed(page)
    assert tags[0] == "html" and "style" in tags and "table" in tags
    assert "script" not in tags and "link" not in tags and "img" not in tags
    assert "cold-outbound" in page and "Leads not being worked: 0" in page
    # With --json the document stays alone on stdout.
    both = run("report", "--json", "--html", str(target))
    assert json.loads(both.out)["sequences"][0]["name"] == "cold-outbound"
    assert "Wrote" in both.err


def test_an_unknown_sequence_gets_a_suggestion(run: Runner) -> None:
    result = run("report", "cold-outbund")
    assert result.code == 1
    assert "no sequence named 'cold-outbund'" in result.err
    assert "did you mean 'cold-outbound'?" in result.err
    assert result.out == ""
