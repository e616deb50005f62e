"""`sequencer inbox check` as an operator runs it, against a real Dovecot, on both databases."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from servers.dovecot import DovecotServer

import sequencer.cli.watching  # noqa: F401  (registers the commands on the group)
from sequencer.cli.common import cli

REPO = Path(__file__).resolve().parents[2]
ANA = "ana.reyes@northwind.example"
MARCUS = "marcus.oyelaran@northwind.example"
SECRET = "inbox-cli-test-secret-0123456789"

Invoke = Callable[..., Result]


def message(number: int, sender: str = "dana@globex.example") -> bytes:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = ANA
    email["Subject"] = f"Question {number}"
    email["Message-ID"] = f"<q{number}@globex.example>"
    email.set_content("Could you send me the pricing?\n")
    return email.as_bytes()


@pytest.fixture
def invoke(
    tmp_path: Path,
    database_url: str,
    dovecot_server: DovecotServer,
    imap_user: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Invoke:
    """Runs `sequencer ...` in a project whose first mailbox (Ana's) reads the test user's
    inbox; the second (Marcus's) has no `imap:` block."""
    user, _ = imap_user
    for folder in ("sequences", "templates"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    config = yaml.safe_load((REPO / "sequencer.yaml").read_text())
    config["mailboxes"][0]["imap"] = {
        "host": "127.0.0.1",
        "port": dovecot_server.port,
        "security": "none",
        "username": user,
        "password_env": "INBOX_PASSWORD",
        "timeout": 3,
    }
    (tmp_path / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    for name in ("SEQUENCER_CONFIG", "SEQUENCER_SEQUENCES_DIR", "SEQUENCER_TEMPLATES_DIR"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str, password: str | None = None) -> Result:
        env = {
            "SEQUENCER_DATABASE_URL": database_url,
            "SEQUENCER_SECRET": SECRET,
            "INBOX_PASSWORD": password or imap_user[1],
            "NO_COLOR": "1",
        }
        return CliRunner().invoke(cli, list(args), env=env, color=False)

    return run


def test_inbox_check_reports_capabilities_folders_and_unprocessed_mail(
    invoke: Invoke, dovecot_server: DovecotServer, imap_user: tuple[str, str]
) -> None:
    user, password = imap_user
    dovecot_server.deliver(user, message(0))  # old mail: never acted on
    first = invoke("inbox", "check", ANA)
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"ok    {ANA}: IMAP 127.0.0.1:{dovecot_server.port}, IDLE: yes")
    assert "no watcher running" in lines[0]
    assert any(line.strip().startswith("capabilities: ") and "IDLE" in line for line in lines)
    assert "      folders: INBOX" in lines
    assert "      INBOX: not watched yet" in first.stdout
    # The first catch-up only places the cursor after what is already there.
    placed = invoke("inbox", "check", "--catch-up")
    assert placed.exit_code == 0, placed.output
    assert "      processed 0 messages" in placed.stdout
    for number in (1, 2):
        dovecot_server.deliver(user, message(number))
    waiting = invoke("inbox", "check")
    assert waiting.exit_code == 0, waiting.output
    assert "      INBOX: 2 unprocessed after UID 1 (UIDVALIDITY " in waiting.stdout
    caught = invoke("inbox", "check", ANA, "--catch-up", "--json")
    assert caught.exit_code == 0, caught.output
    (report,) = json.loads(caught.stdout)
    assert report["idle"] is True and report["watched"][0]["unprocessed"] == 2
    assert report["catch_up"]["processed"] == 2
    after = invoke("inbox", "check")
    assert "      INBOX: 0 unprocessed after UID 3" in after.stdout
    assert password not in first.output + waiting.output + caught.output + after.output
    flags = dovecot_server.flags(user)
    assert len(flags) == 3 and all("\\Seen" not in f for f in flags.values())


def test_inbox_check_fails_clearly(invoke: Invoke, imap_user: tuple[str, str]) -> None:
    wrong = invoke("inbox", "check", ANA, password="not-the-password-4711")
    assert wrong.exit_code == 1
    assert wrong.stdout.startswith(f"FAIL  {ANA}: {ANA}: cannot log in to IMAP server")
    assert "not-the-password-4711" not in wrong.output
    no_imap = invoke("inbox", "check", MARCUS)
    assert no_imap.exit_code == 1
    assert f"mailbox {MARCUS} has no `imap:` settings" in no_imap.stdout
    unknown = invoke("inbox", "check", "nobody@northwind.example")
    assert unknown.exit_code == 1 and "not configured" in unknown.output
