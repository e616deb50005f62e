"""`sequencer web` as an operator starts it (here as in docker-compose: --host 0.0.0.0): it
serves the unsubscribe link and the API, keeps tokens out of its log, stops cleanly on SIGTERM,
and refuses bad settings with a message instead of a traceback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from web_support import OWNER, SECRET, TOKEN, make_project

from sequencer.core.unsubscribe import make_token

SEQUENCER = [sys.executable, "-m", "sequencer"]
DANA = "dana.kim@globex.example"


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    env.update(
        NO_COLOR="1",
        SEQUENCER_DATABASE_URL=f"sqlite+aiosqlite:///{root / 'sequencer.db'}",
        SEQUENCER_SECRET=SECRET.decode(),
        SEQUENCER_API_TOKEN=TOKEN,
    )
    env.update(extra)
    return env


class Running:
    """A `sequencer web` process whose stderr is collected as it comes."""

    def __init__(self, root: Path, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [*SEQUENCER, "web", *args],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.process.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the output:\n{''.join(self.lines)}")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code, "".join(self.lines)


def test_sequencer_web_serves_unsubscribe_and_api_and_stops_on_sigterm(tmp_path: Path) -> None:
    root = tmp_path
    make_project(root)
    env = env_for(root)
    upgrade = [*SEQUENCER, "db", "upgrade"]
    subprocess.run(upgrade, cwd=root, env=env, check=True, capture_output=True)
    web = Running(root, env, "--host", "0.0.0.0", "--port", "0")
    try:
        port = int(web.wait_for(r"Serving on http://0\.0\.0\.0:(\d+)")[1])
        web.wait_for("Application startup complete")
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/healthz").json()["status"] == "ok"
            enrolled = client.post(
                "/api/v1/enrollments",
                headers=auth,
                json={
                    "sequence": "email-then-call",
                    "owner": OWNER,
                    "prospects": [{"email": DANA, "first_name": "Dana"}],
                },
            )
            assert enrolled.json()["enrolled"] == 1, enrolled.text
            token = make_token(SECRET, DANA)
            assert client.get(f"/u/{token}").status_code == 200
            done = client.post(
                f"/u/{token}",
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert "You are unsubscribed" in done.text
            timeline = client.get(f"/api/v1/prospects/{DANA}/timeline", headers=auth).json()
            assert timeline["enrollments"][0]["stop_reason"] == "unsubscribed"
            assert client.get("/api/v1/tasks").status_code == 401
    finally:
        code, output = web.stop()
    assert code == 0, output
    assert "Traceback" not in output
    assert TOKEN not in output, "the API token must never be logged"
    assert make_token(SECRET, DANA) not in output, "unsubscribe tokens stay out of the log"
    assert '"POST /u/… HTTP/1.1" 200' in output
    assert "da•••@globex.example" in output  # what happened, without the whole address


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    make_project(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*SEQUENCER, "web", "--port", str(port)],
            cwd=tmp_path,
            env=env_for(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_weak_api_token_is_refused_without_echoing_it(tmp_path: Path) -> None:
    make_project(tmp_path)
    result = subprocess.run(
        [*SEQUENCER, "web", "--port", "0"],
        cwd=tmp_path,
        env=env_for(tmp_path, SEQUENCER_API_TOKEN="hunter2"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "SEQUENCER_API_TOKEN must be at least 16" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
