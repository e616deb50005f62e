"""`sequencer mailbox check` as an operator runs it, against a real SMTP server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from servers.smtp import RecordingSMTPServer

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def project(tmp_path: Path, port: int, password_env: str) -> Path:
    for folder in ("sequences", "templates"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    config = yaml.safe_load((REPO / "sequencer.yaml").read_text())
    for box in config["mailboxes"]:
        box["smtp"] = {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "username": "ana",
            "password_env": password_env,
            "timeout": 2,
        }
    (tmp_path / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    environment.update(NO_COLOR="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "sequencer", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mailbox_check_reports_each_mailbox_and_hides_the_password(tmp_path: Path) -> None:
    with RecordingSMTPServer(username="ana", password=PASSWORD) as server:
        root = project(tmp_path, server.port, "SMTP_PASSWORD")
        good = run(root, "mailbox", "check", "ana.reyes@northwind.example", SMTP_PASSWORD=PASSWORD)
        assert good.returncode == 0, good.stdout + good.stderr
        assert good.stdout.startswith("ok    ana.reyes@northwind.example:")
        assert f"127.0.0.1:{server.port}" in good.stdout
        bad = run(root, "mailbox", "check", SMTP_PASSWORD="wrong password")
        assert bad.returncode == 1
        assert "FAIL  ana.reyes@northwind.example" in bad.stdout
        assert "wrong password" not in bad.stdout + bad.stderr
        unset = run(root, "mailbox", "check", "ana.reyes@northwind.example")
        assert unset.returncode == 1
        assert "SMTP_PASSWORD is not set" in unset.stdout
        assert server.messages == []  # a check never sends anything
    unknown = run(root, "mailbox", "check", "nobody@northwind.example")
    assert unknown.returncode == 1 and "not configured" in unknown.stderr


def test_a_password_in_the_config_file_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path, 2525, "SMTP_PASSWORD")
    config = yaml.safe_load((root / "sequencer.yaml").read_text())
    config["mailboxes"][0]["smtp"]["password"] = "hunter2"
    (root / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = run(root, "validate")
    assert result.returncode == 1
    assert "never put a password in sequencer.yaml" in result.stdout
    assert "password_env" in result.stdout
