"""`sequencer classify` as a rep runs it on a saved email: summary, JSON, broken files, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import sequencer.cli.inbox  # noqa: F401  (registers the command on the group)
from sequencer.cli.common import cli

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "fixtures" / "inbound"
TODAY = "2026-03-02"


def invoke(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["classify", *args], input=stdin, color=False)


def test_summary_of_a_bounce_names_recipient_status_and_our_message() -> None:
    result = invoke(str(SAMPLES / "bounce_postfix_dsn_user_unknown.eml"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "bounce (permanent)"
    assert "  reason      mailbox does not exist" in lines
    assert "  recipients  jdoe@example.com" in lines
    assert "  status      5.1.1" in lines
    assert "  original    <s42.intro.3f9a1c0b7e@northwind.example>" in lines


def test_summary_of_an_out_of_office_gives_the_return_date() -> None:
    result = invoke(str(SAMPLES / "ooo_fr_de_retour.eml"), "--today", TODAY)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("out of office\n")
    assert "  back on     2026-03-14" in result.stdout.splitlines()


def test_summary_of_a_reply_shows_only_the_new_text() -> None:
    result = invoke(str(SAMPLES / "reply_outlook_top_posted.eml"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("reply\n")
    assert "send me the case study" in result.stdout
    assert "bumping" not in result.stdout


def test_json_output_is_the_classification() -> None:
    result = invoke(str(SAMPLES / "ooo_de_zurueck_am.eml"), "--json", "--today", TODAY)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "out_of_office"
    assert data["return_date"] == "2026-03-14"
    assert data["sender"] == "k.weber@example.de"
    assert data["in_reply_to"] == ["<s65.intro.ff66007711@northwind.example>"]
    assert set(data) >= {"recipients", "status", "permanent", "reason", "text", "reply_text"}


def test_today_moves_the_return_date() -> None:
    # "back on Monday", asked on Tuesday 10 March, is Monday 16 March.
    sample = str(SAMPLES / "ooo_en_gmail_vacation_back_monday.eml")
    result = invoke(sample, "--json", "--today", "2026-03-10")
    assert json.loads(result.stdout)["return_date"] == "2026-03-16"


def test_our_domain_marks_our_own_copies() -> None:
    sample = str(SAMPLES / "unrelated_own_sent_copy.eml")
    assert json.loads(invoke(sample, "--json").stdout)["kind"] == "reply"
    ours = invoke(sample, "--json", "--our-domain", "northwind.example")
    assert json.loads(ours.stdout)["kind"] == "unrelated"


@pytest.mark.parametrize(
    "name",
    [
        "broken_binary_garbage.eml",
        "broken_empty.eml",
        "broken_no_headers.eml",
        "broken_bad_base64.eml",
    ],
)
def test_broken_and_binary_files_are_classified_not_crashed(name: str) -> None:
    for extra in ((), ("--json",)):
        result = invoke(str(SAMPLES / name), *extra)
        assert result.exit_code == 0, result.output
        assert result.exception is None


def test_binary_garbage_prints_no_control_characters() -> None:
    result = invoke("-", stdin=bytes(range(256)) * 8)
    assert result.exit_code == 0, result.output
    assert not any(ord(ch) < 32 and ch != "\n" for ch in result.stdout)


def test_standard_input_is_read_for_a_dash() -> None:
    raw = (SAMPLES / "unsubscribe_mailto_subject.eml").read_bytes()
    result = invoke("-", "--json", stdin=raw)
    assert json.loads(result.stdout)["kind"] == "unsubscribe"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.eml"
    result = invoke(str(missing))
    assert result.exit_code == 1
    assert f"error: {missing}: no such file" in result.stderr
    assert result.stdout == ""


def test_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke(str(tmp_path))
    assert result.exit_code == 1
    assert "is a folder, not a file" in result.stderr


def test_bad_today_is_a_usage_error() -> None:
    result = invoke(str(SAMPLES / "reply_new_thread.eml"), "--today", "14/03/2026")
    assert result.exit_code == 2
    assert "--today" in result.stderr


def test_as_a_subprocess() -> None:
    # The command as a user runs it, through the CLI's own entry point.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    environment["NO_COLOR"] = "1"
    program = "import sequencer.cli.inbox; from sequencer.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", program, "classify", "--json", "--today", TODAY,
         str(SAMPLES / "bounce_exim_permanent.eml")],
        env=environment, capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["kind"], data["recipients"], data["status"], data["permanent"]) == (
        "bounce",
        ["p.schmidt@example.net"],
        "5.1.1",
        True,
    )
    missing = subprocess.run(
        [sys.executable, "-c", program, "classify", str(REPO / "no-such.eml")],
        env=environment, capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "no such file" in missing.stderr
