"""A throwaway Dovecot IMAP server for tests: its own config in a temp dir, loopback only."""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

INSTALL_HINT = "run scripts/install-test-services"
HOST = "127.0.0.1"
SERVER_NAME = "imap.test"
START_ATTEMPTS = 3
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 30
# When the tests run as root, Dovecot's own processes and the mail files belong to these
# accounts (the first two come with the Debian package). Dovecot refuses root as a mail user.
ROOT_INTERNAL_USER = "dovecot"
ROOT_LOGIN_USER = "dovenull"
ROOT_MAIL_USER = "nobody"
# What Dovecot accepts in a login name by default (auth_username_chars); never a '/'.
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_FOLDER_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def find_binary(name: str) -> str:
    """The path of a Dovecot binary; Debian puts the server in /usr/sbin, often not on PATH."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RuntimeError(
            f"Dovecot's {name!r} binary not found (Debian package dovecot-imapd); {INSTALL_HINT}"
        )
    return found


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def dovecot_version(dovecot: str) -> tuple[int, int]:
    """Major and minor version of the dovecot binary, e.g. (2, 3)."""
    result = subprocess.run(
        [dovecot, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    match = re.match(r"(\d+)\.(\d+)", result.stdout.strip())
    if result.returncode != 0 or match is None:
        raise RuntimeError(
            f"cannot tell the Dovecot version from `{dovecot} --version` "
            f"(exit {result.returncode}): {(result.stdout + result.stderr).strip()}"
        )
    return int(match.group(1)), int(match.group(2))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 and imap.test, made with the openssl tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the IMAP TLS tests need the openssl tool: apt-get install openssl")
    certificate, key = directory / "imap-cert.pem", directory / "imap-key.pem"
    command = [openssl, "req", "-x509", "-nodes", "-days", "2", "-subj", f"/CN={SERVER_NAME}"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-addext", f"subjectAltName=IP:{HOST},DNS:{SERVER_NAME}"]
    command += ["-keyout", str(key), "-out", str(certificate)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return certificate, key


class DovecotServer:
    """One Dovecot in its own temp directory, listening on 127.0.0.1 only.

    Nothing of the system's Dovecot is used: the config, the users (a passwd-file with a
    plain password per user), the Maildirs, the sockets, the state and the log all live in
    the temp dir. Plain-text login is allowed on the IMAP port; with ``tls=True`` (the
    default) the same port also offers STARTTLS and ``tls_port`` speaks implicit TLS, with a
    self-signed certificate in ``certificate``. XOAUTH2 and OAUTHBEARER are offered too, with
    the user's password standing in for the token. A failed login is answered within half a
    second (no growing penalty), so tests of wrong passwords stay fast.

    Run as root, Dovecot's processes use the Debian package's accounts and the mail belongs
    to ``nobody``; run as anyone else, everything runs as that user.
    """

    def __init__(self, *, tls: bool = True) -> None:
        self.dovecot = find_binary("dovecot")
        self.doveadm = find_binary("doveadm")
        self.version = dovecot_version(self.dovecot)
        self.tls = tls
        self.base_dir: Path | None = None
        self.port: int | None = None
        self.tls_port: int | None = None
        self.certificate: Path | None = None
        self.startup_seconds: float | None = None
        self._users: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start: dict[Path, int] = {}
        self._internal, self._login, self._mail = self._accounts()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        """``imap://127.0.0.1:<port>``: the plain IMAP port."""
        return f"imap://{HOST}:{self._require_port()}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_file(self) -> Path:
        return self._require_base() / "dovecot.log"

    def start(self) -> None:
        """Write a fresh config and start Dovecot on free ports; RuntimeError with its log when
        it does not come up."""
        if self.base_dir is not None:
            raise RuntimeError("Dovecot test server is already started")
        started = time.monotonic()
        self.base_dir = Path(tempfile.mkdtemp(prefix="sequencer-dovecot-"))
        try:
            self._prepare_dirs()
            for attempt in range(1, START_ATTEMPTS + 1):
                self.port = free_port()
                self.tls_port = free_port() if self.tls else None
                try:
                    self._launch()
                    break
                except _PortTaken:
                    if attempt == START_ATTEMPTS:
                        raise RuntimeError(
                            f"Dovecot test server found no free port in {START_ATTEMPTS} tries"
                            + self._log_tail()
                        ) from None
        except BaseException:
            self._terminate()
            self._remove_base_dir()
            raise
        # Backstop for a session that dies without running fixture teardown.
        atexit.register(self.stop)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Kill Dovecot at once and remove its directory, mail included."""
        atexit.unregister(self.stop)
        self._terminate()
        self.port = self.tls_port = None
        self._remove_base_dir()

    def restart(self, *, crash: bool = False) -> None:
        """Stop Dovecot and start it again on the same ports with the same users and mail:
        every open connection is cut. By default it shuts down as for an upgrade (each
        session gets ``* BYE Server shutting down.``; takes about a second); ``crash=True``
        kills it at once, so connections just drop."""
        self._require_base()
        self._require_port()
        self._terminate(graceful=not crash)
        try:
            self._launch()
        except _PortTaken:
            raise RuntimeError(
                f"Dovecot test server could not get its ports back after a restart "
                f"({HOST}:{self.port}, {self.tls_port})" + self._log_tail()
            ) from None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- users and mail ------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Create a mail user, usable at once. Names are case-insensitive (Dovecot lowercases
        logins). Calling it again changes the password, which Dovecot notices within a second.
        """
        if not _USER_NAME.fullmatch(name):
            raise ValueError(f"not a simple user name for the test server: {name!r}")
        if not password or any(c in password for c in ":\r\n\x00"):
            raise ValueError("test passwords must be non-empty without ':' or line breaks")
        self._users[name.lower()] = password
        self._write_user(name.lower())

    def deliver(self, user: str, message: bytes, folder: str = "INBOX") -> None:
        """Put a message into a user's folder as a delivery would: unread, no flags set.

        Uses ``doveadm save``, so Dovecot's indexes know the message at once.
        """
        self._check_user(user)
        self._check_folder(folder)
        self._doveadm("save", "-u", user, "-m", folder, stdin=message)

    def create_folder(self, user: str, folder: str) -> None:
        self._check_user(user)
        self._check_folder(folder)
        self._doveadm("mailbox", "create", "-u", user, folder)

    def folders(self, user: str) -> list[str]:
        """The user's folders, as Dovecot itself lists them."""
        self._check_user(user)
        return self._doveadm("mailbox", "list", "-u", user).splitlines()

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, set[str]]:
        """Each message's flags by UID, read with doveadm (not over IMAP)."""
        self._check_user(user)
        self._check_folder(folder)
        output = self._doveadm("fetch", "-u", user, "uid flags", "mailbox", folder)
        result: dict[int, set[str]] = {}
        uid: int | None = None
        for line in output.splitlines():
            key, _, value = line.partition(":")
            if key == "uid":
                uid = int(value)
            elif key == "flags" and uid is not None:
                result[uid] = set(value.split())
        return result

    # -- internals -----------------------------------------------------------------------

    def _require_base(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("Dovecot test server has not been started")
        return self.base_dir

    def _require_port(self) -> int:
        if self.port is None:
            raise RuntimeError("Dovecot test server is not running")
        return self.port

    def _check_user(self, user: str) -> None:
        if user.lower() not in self._users:
            raise ValueError(f"no user {user!r} on the Dovecot test server; add_user() first")

    @staticmethod
    def _check_folder(folder: str) -> None:
        if not _FOLDER_NAME.fullmatch(folder):
            raise ValueError(f"not a folder name: {folder!r}")

    @staticmethod
    def _accounts() -> tuple[pwd.struct_passwd, pwd.struct_passwd, pwd.struct_passwd]:
        """Accounts for Dovecot's internal processes, its login processes and the mail."""
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid())
            return me, me, me
        try:
            return (
                pwd.getpwnam(ROOT_INTERNAL_USER),
                pwd.getpwnam(ROOT_LOGIN_USER),
                pwd.getpwnam(ROOT_MAIL_USER),
            )
        except KeyError as exc:
            raise RuntimeError(
                f"running as root and the account {exc.args[0]} that Dovecot's processes run "
                f"as is missing; {INSTALL_HINT}"
            ) from None

    @staticmethod
    def _group_setting() -> list[str]:
        """Without root, Dovecot can only give its sockets to our own group."""
        if os.geteuid() == 0:
            return []
        return [f"default_internal_group = {grp.getgrgid(os.getegid()).gr_name}"]

    def _prepare_dirs(self) -> None:
        base = self._require_base()
        # Dovecot's unprivileged processes read the config and users and reach the mail dir.
        base.chmod(0o755)
        for name in ("run", "state", "mail", "users"):
            (base / name).mkdir()
        if os.geteuid() == 0:
            os.chown(base / "mail", self._mail.pw_uid, self._mail.pw_gid)
        if self.tls:
            self.certificate, key = self_signed_certificate(base)
            self.certificate.chmod(0o644)
            key.chmod(0o644)

    def _write_user(self, name: str) -> None:
        """One passwd-file per user: Dovecot checks a file for changes at most once a second,
        but opens a file it has not seen yet at once, so a new user can log in immediately."""
        path = self._require_base() / "users" / name
        # Replaced in one rename, so the auth process never reads half a file.
        partial = path.with_name(f".{name}.partial")
        partial.write_text(f"{name}:{{PLAIN}}{self._users[name]}::::::\n", encoding="utf-8")
        partial.chmod(0o644)
        partial.replace(path)

    def _config(self) -> str:
        """dovecot.conf for this server, in the syntax of the installed version (2.3 or 2.4)."""
        base = self._require_base()
        modern = self.version >= (2, 4)
        users = f"{base}/users/%{{user}}"
        # 2.4 wants its version settings first; it renamed a few settings 2.3 knows.
        lines = ["dovecot_config_version = 2.4.0", "dovecot_storage_version = 2.4.0"] * modern
        lines += [
            f"base_dir = {base}/run",
            f"state_dir = {base}/state",
            "instance_name = sequencer-test",
            f"log_path = {self.log_file}",
            "protocols = imap",
            f"listen = {HOST}",
            f"default_internal_user = {self._internal.pw_name}",
            f"default_login_user = {self._login.pw_name}",
            *self._group_setting(),
            f"mail_uid = {self._mail.pw_uid}",
            f"mail_gid = {self._mail.pw_gid}",
            f"first_valid_uid = {self._mail.pw_uid}",
            f"first_valid_gid = {self._mail.pw_gid}",
            f"mail_home = {base}/mail/%{{user}}",
            # XOAUTH2 checks the token like a password here, so tests can log in with a token.
            "auth_mechanisms = plain login xoauth2 oauthbearer",
            # Without these a wrong password is answered after 2 s, and later with every failure
            # (Dovecot still batches failures every 0.5 s).
            "auth_failure_delay = 0",
            "service anvil {",
            "  chroot =",
            "  unix_listener anvil-auth-penalty {",
            "    mode = 0",
            "  }",
            "}",
            "namespace inbox {",
            "  inbox = yes",
            "}",
        ]
        address = "listen" if modern else "address"
        lines += [
            "service imap-login {",
            "  chroot =",  # chroot needs root; tests may run as anyone
            "  inet_listener imap {",
            f"    {address} = {HOST}",
            f"    port = {self._require_port()}",
            "  }",
            "  inet_listener imaps {",
            f"    {address} = {HOST}",
            f"    port = {self.tls_port or 0}",  # 0: no implicit-TLS listener
            "  }",
            "}",
        ]
        if modern:
            lines += [
                "auth_allow_cleartext = yes",
                "mail_driver = maildir",
                "mail_path = ~/Maildir",
                "passdb passwd-file {",
                f"  passwd_file_path = {users}",
                "}",
                "userdb passwd-file {",
                f"  passwd_file_path = {users}",
                "}",
            ]
        else:
            lines += [
                "disable_plaintext_auth = no",
                "mail_location = maildir:~/Maildir",
                "passdb {",
                "  driver = passwd-file",
                f"  args = scheme=PLAIN username_format=%{{user}} {users}",
                "}",
                "userdb {",
                "  driver = passwd-file",
                f"  args = username_format=%{{user}} {users}",
                "}",
            ]
        if self.certificate is None:
            lines.append("ssl = no")
        else:
            key = self.certificate.with_name("imap-key.pem")
            if modern:
                lines += [f"ssl_server_cert_file = {self.certificate}"]
                lines += [f"ssl_server_key_file = {key}"]
            else:
                lines += [f"ssl_cert = <{self.certificate}", f"ssl_key = <{key}"]
            lines.append("ssl = yes")
        return "\n".join(lines) + "\n"

    def _launch(self) -> None:
        """Start the master process and wait until the IMAP port greets; _PortTaken when a
        port was taken meanwhile, RuntimeError with the log for anything else."""
        base = self._require_base()
        config = base / "dovecot.conf"
        config.write_text(self._config(), encoding="utf-8")
        config.chmod(0o644)
        self._log_start = {path: _size(path) for path in self._log_paths()}
        with (base / "dovecot.out").open("ab") as out:
            # Its own process group, so that stopping can reach every process it forks.
            self._process = subprocess.Popen(
                [self.dovecot, "-F", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=base,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._greets():
            code = self._process.poll()
            if code is not None:
                self._terminate()
                log = self._log_tail()
                if "Address already in use" in log:
                    raise _PortTaken
                raise RuntimeError(
                    f"Dovecot test server exited at start (exit {code}) on {HOST}:{self.port}" + log
                )
            if time.monotonic() > deadline:
                self._terminate()
                raise RuntimeError(
                    f"Dovecot test server did not greet on {HOST}:{self.port} within "
                    f"{READY_TIMEOUT:g} s" + self._log_tail()
                )
            time.sleep(0.02)

    def _greets(self) -> bool:
        try:
            with socket.create_connection((HOST, self._require_port()), timeout=2) as sock:
                return sock.recv(256).startswith(b"* OK")
        except OSError:
            return False

    def _terminate(self, *, graceful: bool = False) -> None:
        """End the master and every process it started, and wait until they are gone."""
        process, self._process = self._process, None
        if process is None:
            return
        group = process.pid  # start_new_session made the master its group's leader
        if graceful:
            # SIGTERM to every process: IMAP sessions say BYE, the master stops (about 1 s).
            # The master alone would leave busy IMAP processes serving their clients.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
            _wait_for_group(group)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        process.wait()
        _wait_for_group(group)

    def _doveadm(self, *args: str, stdin: bytes | None = None) -> str:
        base = self._require_base()
        if not self.running:
            raise RuntimeError("Dovecot test server is not running")
        result = subprocess.run(
            [self.doveadm, "-c", str(base / "dovecot.conf"), *args],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            cwd=base,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"doveadm {' '.join(args)} failed (exit {result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode("utf-8", errors="replace")

    def _log_paths(self) -> tuple[Path, Path]:
        base = self._require_base()
        return base / "dovecot.out", base / "dovecot.log"

    def _log_tail(self) -> str:
        """The last lines Dovecot wrote since it was last launched, for error messages."""
        if self.base_dir is None:
            return ""
        text = ""
        for path in self._log_paths():
            if not path.exists():
                continue
            with path.open("rb") as file:
                file.seek(self._log_start.get(path, 0))
                new = file.read().decode(errors="replace")
            lines = new.splitlines()[-LOG_TAIL_LINES:]
            if lines:
                text += f"\n--- tail of {path} ---\n" + "\n".join(lines)
        return text

    def _remove_base_dir(self) -> None:
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None


def _wait_for_group(group: int) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while _live_members(group) and time.monotonic() < deadline:
        time.sleep(0.01)


def _live_members(group: int) -> list[int]:
    """Processes of a process group that have not died yet.

    Orphaned children are reaped by whatever runs as PID 1, sometimes seconds later; a dead
    one (a zombie) holds no socket, so only the living count.
    """
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class _PortTaken(Exception):
    """Dovecot could not bind a port that was free when chosen."""
