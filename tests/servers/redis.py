"""A throwaway Redis server for tests: redis-server on loopback at a free port, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

INSTALL_HINT = "run scripts/install-test-services"
HOST = "127.0.0.1"
START_ATTEMPTS = 3
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 30


def find_redis_server() -> str:
    """The redis-server binary: on PATH, else where the Debian package puts it."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )
    if found is None:
        raise RuntimeError(f"redis-server not found; {INSTALL_HINT}")
    return found


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def command(port: int, *words: str, timeout: float = 2.0) -> bytes:
    """Send one command in RESP to the server on ``port`` and return the first reply line."""
    payload = f"*{len(words)}\r\n".encode()
    for word in words:
        data = word.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


class RedisServer:
    """One redis-server on 127.0.0.1 at a free port, its working directory a temp dir.

    Nothing is saved (``--save ''``, no append-only file), so it starts in milliseconds and
    leaves nothing behind. ``url`` is ``redis://127.0.0.1:PORT/0``; ``flush()`` empties it.
    Use as a context manager or call ``start()``/``stop()``.
    """

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.port: int | None = None
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self._require_port()}/0"

    @property
    def log_file(self) -> Path:
        assert self.directory is not None, "the Redis server is not started"
        return self.directory / "redis.log"

    def start(self) -> None:
        """Start the server and wait until it answers PING; retries on a port race."""
        self.directory = Path(tempfile.mkdtemp(prefix="sequencer-redis-"))
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(port),
                    "--bind",
                    HOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--logfile",
                    str(self.log_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready(process, port):
                self._process, self.port = process, port
                return
            _end(process)
            if attempt == START_ATTEMPTS:
                tail = self._log_tail()
                self._remove_directory()
                raise RuntimeError(f"redis-server did not start on port {port}:\n{tail}")

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False  # exited: most likely the port was taken meanwhile
            try:
                if command(port, "PING") == b"+PONG":
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def flush(self) -> None:
        """Forget every key (FLUSHALL), between tests sharing the server."""
        reply = command(self._require_port(), "FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL answered {reply!r}")

    def stop(self) -> None:
        process, self._process, self.port = self._process, None, None
        if process is not None:
            _end(process)
        self._remove_directory()

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

    def _require_port(self) -> int:
        if self.port is None:
            raise RuntimeError("the Redis server is not started")
        return self.port

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _remove_directory(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _end(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it lingers; always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()
