"""`sequencer run` as an operator starts it: new leads are answered at once, SIGTERM is clean."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from servers.smtp import RecordingSMTPServer

REPO = Path(__file__).resolve().parents[2]
OWNER = "ana.reyes@northwind.example"


def project(root: Path, port: int) -> Path:
    for folder in ("sequences", "templates"):
        shutil.copytree(REPO / folder, root / folder)
    config = yaml.safe_load((REPO / "sequencer.yaml").read_text())
    for box in config["mailboxes"]:
        box["smtp"] = {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5}
    (root / "sequencer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def env_for(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    env.update(
        NO_COLOR="1",
        SEQUENCER_DATABASE_URL=f"sqlite+aiosqlite:///{root / 'sequencer.db'}",
        SEQUENCER_SECRET="acceptance-secret-0123456789",
    )
    return env


def test_an_inbound_lead_is_answered_within_seconds(tmp_path: Path) -> None:
    with RecordingSMTPServer() as smtp:
        root = project(tmp_path, smtp.port)
        env = env_for(root)
        sequencer = [sys.executable, "-m", "sequencer"]
        subprocess.run(
            [*sequencer, "db", "upgrade"], cwd=root, env=env, check=True, capture_output=True
        )
        runner = subprocess.Popen(
            [*sequencer, "run"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(2)  # the runner is up and idle
            leads = root / "lead.csv"
            leads.write_text("email,first_name,company\nlee@initech.example,Lee,Initech\n")
            started = time.monotonic()
            enrolled = subprocess.run(
                [*sequencer, "enroll", "inbound-demo-request", str(leads), "--owner", OWNER],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert enrolled.returncode == 0, enrolled.stderr
            (message,) = smtp.wait_for(1, timeout=15)
            latency = time.monotonic() - started
            print(f"enroll command started -> reply accepted by SMTP: {latency:.2f} s")
            assert message.rcpt_tos == ("lee@initech.example",)
            assert "Lee" in message.parsed.get_body(("plain",)).get_content()
            # Well within a few seconds even counting the enroll command's own start-up.
            assert latency < 10
        finally:
            runner.send_signal(signal.SIGTERM)
            _out, err = runner.communicate(timeout=60)
        assert runner.returncode == 0, err
        assert "Traceback" not in err
        assert "Stopped." in err
