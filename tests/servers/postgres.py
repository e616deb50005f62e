"""A throwaway PostgreSQL server for tests: initdb into a temp dir, run on loopback, remove."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

INSTALL_HINT = "run scripts/install-test-services"
NEEDED_BINARIES = ("initdb", "pg_ctl", "postgres", "psql")
# Debian installs each major version's server side by side under this directory.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
# The server refuses to run as root; this is the account the Debian package creates.
SERVER_USER = "postgres"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
START_ATTEMPTS = 3
LOG_TAIL_LINES = 30
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# postgres_template_factory(name, prepare) -> name; prepare gets the template's URL.
TemplateFactory = Callable[[str, Callable[[str], object]], str]


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin, so 15 sorts after 9.6."""
    version = bin_dir.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def missing_binaries(bin_dir: Path) -> list[str]:
    """Which of the binaries the tests use are not in bin_dir."""
    return [name for name in NEEDED_BINARIES if not (bin_dir / name).is_file()]


def find_bin_dir() -> Path:
    """The newest PostgreSQL bin directory that has every binary the tests use."""
    candidates = [path for path in DEBIAN_ROOT.glob("*/bin") if not missing_binaries(path)]
    if candidates:
        return max(candidates, key=_version_key)
    # Outside Debian (e.g. a Homebrew laptop) the binaries are usually on PATH instead.
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None:
        path = Path(pg_ctl).resolve().parent
        if not missing_binaries(path):
            return path
    raise RuntimeError(
        f"PostgreSQL server binaries not found: need {', '.join(NEEDED_BINARIES)} under "
        f"{DEBIAN_ROOT}/*/bin (or pg_ctl on PATH); {INSTALL_HINT}"
    )


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def quote_identifier(name: str) -> str:
    """Double-quote a database name, refusing anything but a plain identifier."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def random_database_name(prefix: str = "t_") -> str:
    """A database name no other test will pick: the prefix and 16 random hex digits."""
    return f"{prefix}{secrets.token_hex(8)}"


class PostgresServer:
    """One PostgreSQL server in its own temp directory, listening on 127.0.0.1 only.

    Durability is switched off (fsync, synchronous_commit, full_page_writes): the data dies
    with the test session anyway, and it makes creating databases and committing much faster.
    The unix socket lives in the data directory so it never clashes with a system server.
    Authentication is ``trust`` for the ``postgres`` superuser, so URLs carry no password.
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir if bin_dir is not None else find_bin_dir()
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise RuntimeError(
                f"PostgreSQL binaries missing from {self.bin_dir}: {', '.join(missing)}; "
                f"{INSTALL_HINT}"
            )
        self.base_dir: Path | None = None
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._run_as = self._server_account()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._require_base() / "data"

    @property
    def log_file(self) -> Path:
        return self._require_base() / "postgres.log"

    @property
    def running(self) -> bool:
        return self.port is not None

    def start(self) -> None:
        """initdb a fresh cluster and start it; raises RuntimeError with the log on failure."""
        if self.running:
            raise RuntimeError("PostgreSQL test server is already running")
        started = time.monotonic()
        self.base_dir = Path(tempfile.mkdtemp(prefix="sequencer-pg-"))
        try:
            self._chown(self.base_dir)
            self._initdb()
            self._start_on_free_port()
        except BaseException:
            # pg_ctl may give up waiting on a postmaster that then comes up after all.
            self._stop_postmaster()
            self._remove_base_dir()
            raise
        # Backstop for a session that dies without running fixture teardown.
        atexit.register(self.stop)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop the server at once (no checkpoint: the data is thrown away) and remove it."""
        atexit.unregister(self.stop)
        if self.base_dir is None:
            return
        self._stop_postmaster()
        self.port = None
        self._remove_base_dir()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------------

    def url(self, database: str, driver: str = "asyncpg") -> str:
        """SQLAlchemy URL of a database on this server, e.g. postgresql+asyncpg://...:5432/db."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{SUPERUSER}@{HOST}:{self._require_port()}/{database}"

    def psql_args(self, database: str = "postgres") -> list[str]:
        """psql command line connecting as the superuser; add -c SQL or feed it stdin."""
        return [
            str(self.bin_dir / "psql"),
            "-X",  # ignore the caller's ~/.psqlrc
            "-q",
            "-A",
            "-t",
            "-h",
            HOST,
            "-p",
            str(self._require_port()),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
        ]

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through psql as the superuser; returns unaligned, tuples-only output."""
        result = subprocess.run(
            [*self.psql_args(database), "-c", sql],
            env=self.client_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"psql failed on database {database!r} (exit {result.returncode}): "
                f"{result.stderr.strip()}\nSQL: {sql}"
            )
        return result.stdout.strip()

    def create_database(self, name: str, template: str | None = None) -> None:
        """CREATE DATABASE name, as a copy of template when given (else an empty database)."""
        sql = f"CREATE DATABASE {quote_identifier(name)}"
        if template is not None:
            sql += f" TEMPLATE {quote_identifier(template)}"
        self.psql(sql)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting anyone still connected (a test's leaked pool)."""
        self.psql(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)")

    def databases(self) -> set[str]:
        """Names of every database on the server, templates included."""
        return set(self.psql("SELECT datname FROM pg_database").splitlines())

    def make_template(self, name: str) -> None:
        """Freeze a prepared database so CREATE DATABASE ... TEMPLATE can copy it.

        Copying fails while anyone is connected to the source, so this disconnects whatever
        the preparation left open and then forbids new connections.
        """
        quoted = quote_identifier(name)
        self.psql(f"ALTER DATABASE {quoted} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true")
        self.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )

    @contextlib.contextmanager
    def temporary_database(self, template: str | None = None) -> Iterator[str]:
        """A freshly created database with a random name, dropped on exit."""
        name = random_database_name()
        self.create_database(name, template=template)
        try:
            yield name
        finally:
            self.drop_database(name)

    # -- internals -----------------------------------------------------------------------

    def _require_base(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("PostgreSQL test server has not been started")
        return self.base_dir

    def _require_port(self) -> int:
        if self.port is None:
            raise RuntimeError("PostgreSQL test server is not running")
        return self.port

    @staticmethod
    def _server_account() -> pwd.struct_passwd | None:
        """The account to run initdb/pg_ctl as: postgres when we are root, else ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root and there is no {SERVER_USER!r} user for PostgreSQL to run "
                f"as (it refuses to run as root); {INSTALL_HINT}"
            ) from None

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    @staticmethod
    def client_env() -> dict[str, str]:
        """The environment for client tools, without the caller's PG* settings."""
        # PG* variables from the caller's shell (PGDATABASE, PGOPTIONS, PGSSLMODE ...) would
        # change where and how the tools connect; the server is fully described by arguments.
        return {key: value for key, value in os.environ.items() if not key.startswith("PG")}

    def _server_env(self) -> dict[str, str]:
        env = self.client_env()
        if self._run_as is not None:
            env.update(HOME=self._run_as.pw_dir, USER=SERVER_USER, LOGNAME=SERVER_USER)
        return env

    def _run_server_binary(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run initdb/pg_ctl as the server account, capturing stdout and stderr together."""
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:
            kwargs.update(user=self._run_as.pw_uid, group=self._run_as.pw_gid, extra_groups=[])
        return subprocess.run(
            [str(self.bin_dir / name), *args],
            # The server account may not be able to enter our working directory.
            cwd=self._require_base(),
            env=self._server_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            **kwargs,
        )

    def _initdb(self) -> None:
        result = self._run_server_binary(
            "initdb",
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            # C locale: works whatever locales the machine has generated, and sorts the
            # same everywhere.
            "--locale=C",
            "--no-sync",
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout.strip()}"
            )

    def _start_on_free_port(self) -> None:
        # The port is free when chosen but another process can take it before the server
        # binds it, so a bind failure is retried on a new port.
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            options = [
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                f"port={port}",
                "-c",
                f"unix_socket_directories={self.data_dir}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ]
            result = self._run_server_binary(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                # pg_ctl hands -o to a shell, hence the quoting.
                "-o",
                shlex.join(options),
            )
            # With -w, pg_ctl succeeds only once this data directory's postmaster is ready.
            if result.returncode == 0:
                self.port = port
                return
            log = self._log_tail()
            if attempt < START_ATTEMPTS and "could not bind" in log:
                self.log_file.unlink(missing_ok=True)
                continue
            raise RuntimeError(
                f"PostgreSQL test server did not start on {HOST}:{port} "
                f"(pg_ctl exit {result.returncode}):\n{result.stdout.strip()}{log}"
            )

    def _stop_postmaster(self) -> None:
        if self.base_dir is not None and (self.data_dir / "postmaster.pid").exists():
            self._run_server_binary("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate")

    def _log_tail(self) -> str:
        if self.base_dir is None or not self.log_file.exists():
            return ""
        lines = self.log_file.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        return f"\n--- tail of {self.log_file} ---\n" + "\n".join(lines)

    def _remove_base_dir(self) -> None:
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
