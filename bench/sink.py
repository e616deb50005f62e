"""Postfix's smtp-sink on a free loopback port: the SMTP server the send benchmarks aim at.

smtp-sink accepts mail as fast as the network allows and throws it away, so a benchmark
measures the client, not the server. With ``-c`` it prints running counters (`sess=N quit=N
mesg=N`, separated by carriage returns) that say how many messages it accepted; with ``dump``
it also appends every message to one file, so Message-IDs can be checked for duplicates (much
slower: use it for checks, not for figures).

    with Sink() as sink:
        ...send to 127.0.0.1:sink.port...
        print(sink.count())
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Self

BINARY = "/usr/sbin/smtp-sink"
INSTALL_HINT = "install the Debian package `postfix` (it ships /usr/sbin/smtp-sink)"
HOST = "127.0.0.1"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: smtp-sink refuses to run as root without -u: it drops to this account.
UNPRIVILEGED = "nobody"
_COUNTER = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")
_MESSAGE_ID = re.compile(rb"(?im)^Message-ID:\s*(\S+)")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Sink:
    """One smtp-sink process on 127.0.0.1 at a free port, its output in a temp dir.

    ``connections`` bounds the sessions it serves at once (smtp-sink's -m); more wait in the
    listen queue. ``dump`` keeps every message in one file (see :meth:`message_ids`)."""

    def __init__(self, *, connections: int = 256, dump: bool = False) -> None:
        if not Path(BINARY).is_file():
            raise SystemExit(f"{BINARY} not found; {INSTALL_HINT}")
        self.connections = connections
        self.dump = dump
        self.port = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def counter_file(self) -> Path:
        assert self._dir is not None, "the sink is not started"
        return self._dir / "counters.txt"

    @property
    def dump_file(self) -> Path:
        assert self._dir is not None, "the sink is not started"
        return self._dir / "messages.txt"

    def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
        args = [BINARY, "-c", "-m", str(self.connections)]
        if os.geteuid() == 0:
            account = pwd.getpwnam(UNPRIVILEGED)
            os.chown(self._dir, account.pw_uid, account.pw_gid)
            args += ["-u", UNPRIVILEGED]
        if self.dump:
            args += ["-D", str(self.dump_file)]
        self.port = free_port()
        args += [f"{HOST}:{self.port}", "1024"]
        with self.counter_file.open("wb") as output:
            self._process = subprocess.Popen(
                args, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise SystemExit(
                    f"smtp-sink on {HOST}:{self.port} exited with {self._process.returncode}: "
                    f"{self.counter_file.read_text(errors='replace')[-500:]}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                    if sock.recv(64).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"smtp-sink on {HOST}:{self.port} did not answer within 10 s")
            time.sleep(0.02)

    def count(self) -> int:
        """How many messages smtp-sink has accepted so far (its `mesg=` counter)."""
        try:
            with self.counter_file.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 256))
                tail = handle.read()
        except OSError:
            return 0
        found = _COUNTER.findall(tail)
        return int(found[-1][2]) if found else 0

    def wait_for(self, count: int, timeout: float) -> int:
        """Wait until ``count`` messages have arrived (or ``timeout`` passes); the count."""
        deadline = time.monotonic() + timeout
        seen = self.count()
        while seen < count and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = self.count()
        return seen

    def message_ids(self) -> Counter[bytes]:
        """How many times each Message-ID arrived (needs ``dump=True``)."""
        if not self.dump:
            raise RuntimeError("start the sink with dump=True to read Message-IDs")
        try:
            data = self.dump_file.read_bytes()
        except FileNotFoundError:
            return Counter()
        return Counter(_MESSAGE_ID.findall(data))

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
