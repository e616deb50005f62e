"""Reading and filing mail over IMAP: logged-in sessions, folders, Message-ID lookups, APPEND.

The only module that speaks IMAP. It never changes what is already in a mailbox: folders are
opened read-only (EXAMINE) and messages are read with BODY.PEEK, so nothing is marked seen,
moved or deleted; the one write is APPEND of a new message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, NoReturn

import aioimaplib

from sequencer.core.config import MailboxConfig
from sequencer.core.errors import ConfigError, MailboxUnavailable
from sequencer.core.mailbox_config import Security
from sequencer.mail.credentials import resolve_secret
from sequencer.mail.servers import check_server

log = logging.getLogger(__name__)

# LOGOUT is a courtesy; it must never hold up closing a session.
LOGOUT_TIMEOUT = 5.0
# A Message-ID is unique in practice; more matches than this are not worth reading.
MAX_CONFIRMED_MATCHES = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r")
# RFC 3501 flag: a system flag (\Seen) or a keyword atom.
_FLAGS = re.compile(r"\\?[A-Za-z0-9$_.-]+(?: \\?[A-Za-z0-9$_.-]+)*")
# An id-left@id-right, with or without its angle brackets; no quotes, spaces or controls.
_MESSAGE_ID = re.compile(r"<?([!#-'*-;=?-~]+@[!#-'*-;=?-~]+)>?")
_LIST_LINE = re.compile(rb'\((?P<attributes>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)')
_RESPONSE_CODE = re.compile(rb"\[(?P<code>[A-Z-]+)(?: (?P<value>[^\]]*))?\]")
_LITERAL = re.compile(rb"\{(\d+)\+?\}$")
# The result of a command whose connection dropped before its reply (IMAP's are OK/NO/BAD).
_LOST = "LOST"
# One FETCH response: "<seq> FETCH (" starts it (aioimaplib strips the "* ").
_FETCH_START = re.compile(rb"\d+ FETCH \(")
_FETCH_UID = re.compile(rb"\bUID (\d+)")


@dataclass(frozen=True)
class ImapSettings:
    """How to reach and log in to one mailbox's IMAP server; secrets stay out of the repr."""

    host: str
    port: int
    security: Security = Security.TLS
    username: str = ""
    password: str | None = field(default=None, repr=False)
    # XOAUTH2 (Gmail, Microsoft 365); used instead of the password when both are set.
    oauth2_token: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    validate_certs: bool = True

    def __post_init__(self) -> None:
        where = f"IMAP server {self.host}:{self.port}"
        security = check_server("IMAP", self.host, self.port, self.security, self.timeout)
        object.__setattr__(self, "security", security)
        if not self.username or _CONTROL.search(self.username):
            raise ConfigError(f"{where}: set the username to log in as (usually the address)")
        if not (self.password or self.oauth2_token):
            raise ConfigError(
                f"{where}: IMAP needs a login; set a password or an OAuth2 token for "
                f"{self.username}"
            )
        for secret in (self.password, self.oauth2_token):
            if secret and _CONTROL.search(secret):
                # Never echo it: say what is wrong, not what it is.
                raise ConfigError(
                    f"{where}: the password or token of {self.username} contains a line break "
                    "or control character; check the secrets file or variable"
                )


def imap_settings(box: MailboxConfig, env: Mapping[str, str] | None = None) -> ImapSettings:
    """The IMAP settings of a configured mailbox, secrets resolved; ConfigError when the
    mailbox has no usable ``imap:`` block."""
    # Imported here: the resolver lives with the run-time wiring, which imports this module.

    server = box.imap
    if server is None:
        raise ConfigError(
            f"mailbox {box.address} has no `imap:` settings in sequencer.yaml; add host, port, "
            "security and password_env (see docs/mailboxes.md)"
        )
    what = f"mailbox {box.address} imap"
    token = resolve_secret(server.oauth2_token_env, server.oauth2_token_file, what=what, env=env)
    password = None
    if token is None:
        password = resolve_secret(server.password_env, server.password_file, what=what, env=env)
    if token is None and password is None:
        raise ConfigError(
            f"{what}: IMAP needs a login; set password_env (or password_file, "
            "oauth2_token_env, oauth2_token_file) in sequencer.yaml"
        )
    return ImapSettings(
        host=server.host,
        port=server.port,
        security=server.security,
        username=server.username,
        password=password,
        oauth2_token=token,
        timeout=server.timeout,
    )


@dataclass(frozen=True)
class FolderState:
    """What EXAMINE says about a folder: the UID epoch, the next UID and the message count."""

    name: str
    uidvalidity: int | None
    uidnext: int | None
    exists: int | None


# -- one-shot operations ---------------------------------------------------------------------


async def find_message_id(
    settings: ImapSettings, folder: str, message_id: str, *, name: str
) -> bool:
    """Whether a message with this Message-ID is in the folder. Read-only: changes nothing."""
    wanted = _message_id(message_id)
    async with session(settings, name=name) as imap:
        await imap.examine(folder)
        return await imap.has_message_id(wanted)


async def append_message(
    settings: ImapSettings, folder: str, message: bytes, *, name: str, flags: str = "\\Seen"
) -> None:
    """Add a message to a folder (as a Sent copy: marked seen by default). The folder must
    exist: it is never created."""
    async with session(settings, name=name) as imap:
        await imap.append(folder, message, flags=flags)


async def list_folders(settings: ImapSettings, *, name: str) -> list[str]:
    """The folders a message can be put in or read from, by their plain (decoded) names."""
    async with session(settings, name=name) as imap:
        return await imap.list_folders()


# -- sessions --------------------------------------------------------------------------------


@asynccontextmanager
async def session(settings: ImapSettings, *, name: str) -> AsyncIterator[ImapSession]:
    """A logged-in session, logged out and closed on exit."""
    imap = ImapSession(await connect(settings, name=name), settings, name=name)
    try:
        yield imap
    finally:
        await imap.close()


async def connect(settings: ImapSettings, *, name: str) -> aioimaplib.IMAP4:
    """Connect, secure (TLS or STARTTLS) and log in; MailboxUnavailable saying what to fix
    when any of it fails. ``name`` (the mailbox) goes into every message."""
    loop = asyncio.get_running_loop()
    protocol = _Protocol(loop)
    context = _ssl_context(settings) if settings.security is not Security.NONE else None
    step = "connect to"
    timeout = settings.timeout
    try:
        await asyncio.wait_for(
            loop.create_connection(
                lambda: protocol,
                settings.host,
                settings.port,
                ssl=context if settings.security is Security.TLS else None,
            ),
            timeout,
        )
        await asyncio.wait_for(protocol.greeted, timeout)
        if context is not None and settings.security is Security.STARTTLS:
            step = "start TLS with"
            await asyncio.wait_for(protocol.start_tls(context, settings.host), timeout)
        step = "log in to"
        await asyncio.wait_for(_log_in(protocol, settings), timeout)
    except BaseException as exc:
        protocol.abort()
        if isinstance(exc, (_Refused, TimeoutError, OSError, aioimaplib.AioImapException)):
            raise MailboxUnavailable(_connect_failure(settings, name, step, exc)) from exc
        raise
    log.debug("opened an IMAP session to %s:%s for %s", settings.host, settings.port, name)
    return _Client(protocol, settings)


class ImapSession:
    """One logged-in connection of one mailbox. Every command has its own timeout; any failure
    is a MailboxUnavailable naming the mailbox and server, and a session that lost its
    connection or timed out is closed (open a new one)."""

    def __init__(self, client: aioimaplib.IMAP4, settings: ImapSettings, *, name: str) -> None:
        self.client = client
        self.settings = settings
        self.name = name
        self._protocol: _Protocol = client.protocol
        self._secrets = _secret_forms(settings)

    def __repr__(self) -> str:
        return f"ImapSession({self.name!r}, {self._where})"

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(str(c).upper() for c in self._protocol.capabilities)

    async def examine(self, folder: str) -> FolderState:
        """Open a folder read-only, so no flag can change; MailboxUnavailable listing the
        folders when it doesn't exist."""
        result, lines = await self._run(
            f"open folder {folder!r} of",
            self._protocol.simple_command("EXAMINE", _folder_argument(folder)),
        )
        if result != "OK":
            # A failed EXAMINE leaves no folder selected (RFC 3501 6.3.1).
            self._protocol.state = aioimaplib.AUTH
            await self._folder_problem(folder, lines)
        # aioimaplib tracks SELECT but not EXAMINE; its SEARCH and FETCH need the state.
        self._protocol.state = aioimaplib.SELECTED
        return _folder_state(folder, lines)

    async def uid_search(self, *criteria: str) -> list[int]:
        """UIDs matching a search in the open folder; criteria are sent as given."""
        result, lines = await self._run(
            "search",
            self._protocol.search(*criteria, charset=None, by_uid=True),
        )
        self._check(result, lines, "search")
        uids: list[int] = []
        for line in lines[:-1]:
            uids += [int(word) for word in bytes(line).split() if word.isdigit()]
        return sorted(set(uids))

    async def has_message_id(self, message_id: str) -> bool:
        """Whether the open folder holds a message with exactly this Message-ID."""
        wanted = _message_id(message_id)
        uids = await self.uid_search("HEADER", "Message-ID", _quoted(wanted))
        if not uids:
            return False
        # Some servers match header searches loosely (by words or substrings); the header
        # itself decides. PEEK: reading must not mark anything seen.
        message_set = ",".join(str(uid) for uid in uids[-MAX_CONFIRMED_MATCHES:])
        result, lines = await self._run(
            "read Message-IDs from",
            self._protocol.fetch(
                message_set, "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])", by_uid=True
            ),
        )
        self._check(result, lines, "read Message-IDs from")
        parser = BytesHeaderParser(policy=compat32)
        for line in lines:
            if isinstance(line, bytearray):
                found = parser.parsebytes(bytes(line)).get_all("Message-ID") or []
                if any(_same_message_id(str(value), wanted) for value in found):
                    return True
        return False

    @property
    def has_idle(self) -> bool:
        """Whether the server offers IDLE (RFC 2177): new mail is announced, not polled for."""
        return "IDLE" in self.capabilities

    async def uid_fetch_since(
        self, last_uid: int, limit: int, *, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` messages of the open folder with a UID above ``last_uid``, oldest
        first, as (UID, raw bytes); at most ``max_bytes`` of each when given. PEEK: nothing is
        marked seen. (``new_uids`` then ``uid_fetch``, for one batch.)"""
        if limit < 1:
            raise ValueError(f"need limit >= 1, not {limit}")
        uids = (await self.new_uids(last_uid))[:limit]
        return await self.uid_fetch(uids, max_bytes=max_bytes)

    async def new_uids(self, last_uid: int) -> list[int]:
        """The UIDs above ``last_uid`` in the open folder, oldest first. New mail that the
        server announces from now on makes the next ``idle`` return at once.

        ``N:*`` always includes the folder's last message, even when N is past it (RFC 3501
        6.4.8): that message must neither come back as new nor be downloaded again on every
        call, so it is filtered out here."""
        if last_uid < 0:
            raise ValueError(f"need last_uid >= 0, not {last_uid}")
        self._protocol.mail_signalled = False
        found = await self.uid_search("UID", f"{last_uid + 1}:*")
        return [uid for uid in found if uid > last_uid]

    async def uid_fetch(
        self, uids: Sequence[int], *, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """The messages with these UIDs, in the order given, as (UID, raw bytes); at most
        ``max_bytes`` of each when given. PEEK: nothing is marked seen. A message expunged
        meanwhile is simply not there any more."""
        if not uids:
            return []
        part = "BODY.PEEK[]" if max_bytes is None else f"BODY.PEEK[]<0.{max_bytes}>"
        result, lines = await self._run(
            "read new messages from",
            self._protocol.fetch(_uid_set(list(uids)), f"(UID {part})", by_uid=True),
        )
        self._check(result, lines, "read new messages from")
        bodies = _fetched_bodies(lines[:-1])
        return [(uid, bodies[uid]) for uid in uids if uid in bodies]

    async def idle(self, timeout: float, *, wake: asyncio.Event | None = None) -> bool:
        """Wait in IDLE until the server announces new mail (EXISTS or RECENT), ``timeout``
        seconds pass, or ``wake`` is set; True when new mail was announced. Returns at once
        when mail was announced since the last ``uid_fetch_since`` began.

        IDLE always ends with DONE and the server's reply before this returns, so the session
        can go on; a server that says BYE, drops the connection or does not answer in time
        is a MailboxUnavailable (open a new session). Keep ``timeout`` under 29 minutes:
        servers may end an IDLE that lasts longer (RFC 2177)."""
        protocol = self._protocol
        if not self.has_idle:
            raise self._unavailable(f"{self._where} does not offer IDLE; poll instead")
        if protocol.mail_signalled:
            return True
        if wake is not None and wake.is_set():
            return False
        if protocol.lost:
            raise self._lost("wait for mail on")
        while not protocol.idle_queue.empty():
            protocol.idle_queue.get_nowait()  # pushes left over from an earlier IDLE
        # aioimaplib's idle_start() and wait_server_push() have no timeout of their own and
        # can hang on a BYE; this drives the IDLE command directly and bounds every wait.
        command = asyncio.ensure_future(protocol.idle())
        try:
            await self._idle_started(command)
            signalled = await self._idle_wait(command, timeout, wake)
            await self._idle_done(command)
        except BaseException:
            # Cancelled or failed half-way: DONE and its reply cannot be waited for any more,
            # so the connection goes (the session is closed; open a new one).
            protocol.abort()
            command.cancel()
            if command.done() and not command.cancelled():
                command.exception()  # seen here, so asyncio does not report it as lost
            raise
        return signalled or protocol.mail_signalled

    async def list_folders(self) -> list[str]:
        """Every folder that can be opened, by its decoded name, in the server's order."""
        result, lines = await self._run(
            "list the folders of", self._protocol.simple_command("LIST", '""', '"*"')
        )
        self._check(result, lines, "list the folders of")
        return _parse_list(lines[:-1])

    async def append(self, folder: str, message: bytes, *, flags: str = "\\Seen") -> int | None:
        """Add a message to an existing folder; returns its UID when the server says it
        (UIDPLUS). Line endings become CRLF."""
        flags = flags.strip()
        if flags and not _FLAGS.fullmatch(flags):
            raise ValueError(f"not IMAP flags: {flags!r} (e.g. '\\Seen' or '\\Seen \\Draft')")
        literal = _LINE_ENDINGS.sub(b"\r\n", message)
        if b"\x00" in literal:
            raise ValueError("a message for IMAP APPEND cannot contain NUL bytes")
        result, lines = await self._run(
            f"save a message to folder {folder!r} of",
            self._protocol.append(literal, _folder_argument(folder), flags or None),
        )
        if result != "OK":
            if _response_code(lines[-1])[0] == "TRYCREATE":
                await self._folder_problem(folder, lines)
            self._check(result, lines, f"save a message to folder {folder!r} of")
        code, value = _response_code(lines[-1])
        if code == "APPENDUID" and value is not None:
            with suppress(ValueError, IndexError):
                return int(value.split()[1])
        return None

    async def close(self) -> None:
        """Say LOGOUT (briefly) and close the connection; never raises."""
        protocol = self._protocol
        if not protocol.lost and protocol.state in (aioimaplib.AUTH, aioimaplib.SELECTED):
            with suppress(Exception):
                await asyncio.wait_for(protocol.logout(), LOGOUT_TIMEOUT)
        protocol.abort()

    # -- internals -----------------------------------------------------------------------

    async def _idle_started(self, command: asyncio.Future[Any]) -> None:
        """Wait for the server's go-ahead (``+ idling``) to the IDLE command."""
        protocol = self._protocol
        started = asyncio.ensure_future(protocol.wait_for_idle_response())
        try:
            await asyncio.wait(
                {command, started},
                timeout=self.settings.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            started.cancel()
        if command.done():
            # IDLE ended before it began: refused (NO/BAD), or the connection dropped.
            failure = command.exception()
            if failure is not None:
                reason = self._said(_reason(failure)) or "the connection was lost"
                raise self._unavailable(f"cannot wait for mail on {self._where}: {reason}")
            response = command.result()
            if response.result == _LOST or protocol.lost:
                raise self._lost("wait for mail on")
            raise self._unavailable(
                f"{self._where} refused IDLE: {response.result} "
                f"{self._said(response.lines[-1] if response.lines else b'')}".rstrip()
            )
        if not started.done() or started.cancelled():
            raise self._unavailable(
                f"cannot wait for mail on {self._where}: no reply to IDLE within "
                f"{self.settings.timeout:g} s"
            )

    async def _idle_wait(
        self, command: asyncio.Future[Any], timeout: float, wake: asyncio.Event | None
    ) -> bool:
        """Idle until new mail, the timeout or ``wake``; the server's pushes arrive through
        aioimaplib's idle queue (``* OK Still here`` and the like are not news)."""
        protocol = self._protocol
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while not protocol.mail_signalled:
            remaining = deadline - loop.time()
            if remaining <= 0 or (wake is not None and wake.is_set()):
                return False
            push = asyncio.ensure_future(protocol.idle_queue.get())
            waits: set[asyncio.Future[Any]] = {push, command}
            woken = asyncio.ensure_future(wake.wait()) if wake is not None else None
            if woken is not None:
                waits.add(woken)
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not push.done():
                    push.cancel()
                if woken is not None and not woken.done():
                    woken.cancel()
            if command.done():
                # The server ended IDLE by itself: only when it is going away (BYE).
                raise self._lost("wait for mail on")
        return True

    async def _idle_done(self, command: asyncio.Future[Any]) -> None:
        """Say DONE and wait for IDLE's tagged reply, so the next command can go out."""
        protocol = self._protocol
        if protocol.lost:
            raise self._lost("wait for mail on")
        protocol.idle_done()
        done, _ = await asyncio.wait({command}, timeout=self.settings.timeout)
        if not done:
            raise self._unavailable(
                f"cannot end IDLE on {self._where}: no reply to DONE within "
                f"{self.settings.timeout:g} s"
            )
        response = command.result()
        if response.result == _LOST:
            raise self._lost("end IDLE on")
        # Whatever came with the reply has been seen; the queue starts empty next time.
        while not protocol.idle_queue.empty():
            protocol.idle_queue.get_nowait()

    def _lost(self, what: str) -> MailboxUnavailable:
        bye = self._protocol.bye
        return self._unavailable(
            f"cannot {what} {self._where}: the connection was lost"
            + (f" ({self._said(bye)})" if bye else "")
        )

    async def _run(self, what: str, command: Awaitable[Any]) -> tuple[str, list[bytes]]:
        """Await one aioimaplib command within the timeout: (result, lines), the last line
        being the tagged reply's text. Lost connections and timeouts raise."""
        if self._protocol.lost:
            if asyncio.iscoroutine(command):
                command.close()
            raise self._unavailable(f"cannot {what} {self._where}: the connection was lost")
        try:
            response = await asyncio.wait_for(command, self.settings.timeout)
        except TimeoutError as exc:
            self._protocol.abort()
            raise self._unavailable(
                f"cannot {what} {self._where}: no reply within {self.settings.timeout:g} s"
            ) from exc
        except (OSError, aioimaplib.AioImapException) as exc:
            self._protocol.abort()
            reason = self._said(_reason(exc)) or "the connection was lost"
            raise self._unavailable(f"cannot {what} {self._where}: {reason}") from exc
        if response.result == _LOST:
            raise self._unavailable(
                f"cannot {what} {self._where}: the connection was lost"
                + (f" ({self._said(self._protocol.bye)})" if self._protocol.bye else "")
            )
        lines: list[bytes] = list(response.lines)
        return str(response.result), lines or [b""]

    def _check(self, result: str, lines: list[bytes], what: str) -> None:
        if result != "OK":
            raise self._unavailable(
                f"{self._where} refused to {what} it: {result} {self._said(lines[-1])}".rstrip()
            )

    async def _folder_problem(self, folder: str, lines: list[bytes]) -> NoReturn:
        """Raise the reason a folder could not be used: missing (with the folders there are)
        or refused."""
        words = self._said(lines[-1])
        folders = await self.list_folders()
        if not any(_same_folder(folder, existing) for existing in folders):
            raise self._unavailable(
                f"{self._where} has no folder {folder!r} (it has: {', '.join(folders)}); "
                "check the folder name in sequencer.yaml (e.g. sent_folder)"
            )
        raise self._unavailable(f"{self._where} refused to open folder {folder!r}: {words}")

    def _unavailable(self, message: str) -> MailboxUnavailable:
        return MailboxUnavailable(f"{self.name}: {message}")

    def _said(self, line: bytes | str) -> str:
        """The server's words (or an error's), fit to show: a server that echoes what it was
        sent must not leak a secret into logs or the UI."""
        return _scrub(_words(line), self._secrets)


# -- aioimaplib underneath -------------------------------------------------------------------


class _Refused(Exception):
    """The server answered, but not in a way that lets the session go on."""


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol with what a long-lived client needs: a greeting to wait for,
    STARTTLS, commands that fail at once when the connection drops, and XOAUTH2 errors."""

    transport: Any  # set by asyncio, replaced by STARTTLS

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, None)
        self.greeted: asyncio.Future[None] = loop.create_future()
        self.lost = False
        self.bye: bytes = b""
        self.auth_challenge: bytes = b""
        # Set when the server announces new mail (EXISTS or RECENT), in whatever reply; the
        # watcher clears it before it looks for new messages. aioimaplib drops such lines
        # when they come with another command's reply.
        self.mail_signalled = False

    async def welcome(self, command: bytes) -> None:
        try:
            await super().welcome(command)
        except Exception as exc:
            if not self.greeted.done():
                self.greeted.set_exception(_Refused(f"the greeting was {_words(command)!r}"))
            log.debug("IMAP greeting refused: %s", exc)
            return
        if not self.greeted.done():
            self.greeted.set_result(None)

    def data_received(self, d: bytes) -> None:
        for line in d.split(b"\r\n"):
            if line.startswith(b"* BYE"):
                self.bye = line[2:]  # why the server is about to hang up
        super().data_received(d)

    def _untagged_response(self, line: bytes) -> Any:
        # Parsed lines only: a message's bytes (literal data) never get here.
        words = line.split(None, 3)
        if len(words) >= 3 and words[1].isdigit() and words[2].upper() in (b"EXISTS", b"RECENT"):
            self.mail_signalled = True
        return super()._untagged_response(line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        super().connection_lost(exc)
        if not self.greeted.done():
            self.greeted.set_exception(_Refused("the server closed the connection at once"))
        # aioimaplib would leave these waiting for replies that can no longer come.
        commands = [self.pending_sync_command, *self.pending_async_commands.values()]
        for command in commands:
            if command is not None:
                command.close(b"connection lost", _LOST)

    def _continuation(self, line: bytes) -> None:
        pending = self.pending_sync_command
        if pending is not None and pending.name == "AUTHENTICATE":
            # A refused XOAUTH2 token comes back as a challenge holding the error; the
            # server sends its NO only after an empty reply (RFC 7628 3.2.3).
            self.auth_challenge = line
            self.transport.write(b"\r\n")
            return
        super()._continuation(line)

    async def start_tls(self, context: ssl.SSLContext, host: str) -> None:
        if "STARTTLS" not in self.capabilities:
            raise _Refused("the server does not offer STARTTLS")
        response = await self.execute(
            aioimaplib.Command("STARTTLS", self.new_tag(), loop=self.loop)
        )
        if response.result != "OK":
            raise _Refused(f"STARTTLS was refused: {_words(response.lines[-1])}")
        loop = asyncio.get_running_loop()
        self.transport = await loop.start_tls(self.transport, self, context, server_hostname=host)
        # What the server said before TLS may have been forged on the way (RFC 3501 6.2.1).
        await self.capability()

    def abort(self) -> None:
        """Close the connection without a word (after a failure, or after LOGOUT)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.abort()
        self.lost = True


class _Client(aioimaplib.IMAP4):  # type: ignore[misc]
    """An aioimaplib.IMAP4 around a protocol that connect() has already logged in."""

    def __init__(self, protocol: _Protocol, settings: ImapSettings) -> None:
        self._connected = protocol
        super().__init__(host=settings.host, port=settings.port, timeout=settings.timeout)

    def create_client(self, *args: Any, **kwargs: Any) -> None:
        self.protocol = self._connected
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        self._client_task = done


async def _log_in(protocol: _Protocol, settings: ImapSettings) -> None:
    capabilities = {str(c).upper() for c in protocol.capabilities}
    if settings.oauth2_token:
        if "AUTH=XOAUTH2" not in capabilities:
            raise _Refused("the server does not offer XOAUTH2 login")
        response = await protocol.xoauth2(settings.username, settings.oauth2_token)
    else:
        if "LOGINDISABLED" in capabilities:
            raise _Refused("the server does not allow a password login on this connection")
        assert settings.password is not None  # ImapSettings insists on a secret
        response = await protocol.login(_quoted(settings.username), settings.password)
    if response.result != "OK":
        words = _words(response.lines[-1]) if response.lines else ""
        detail = _oauth2_error(protocol.auth_challenge)
        raise _Refused(f"{response.result} {words}{detail}".strip())


def _connect_failure(settings: ImapSettings, name: str, step: str, exc: BaseException) -> str:
    """A failure to connect, secure or log in, with what to check; never the secret."""
    where = f"{settings.host}:{settings.port}"
    if step == "log in to":
        where += f" as {settings.username}"
    if isinstance(exc, _Refused):
        reason = str(exc)
        if step != "log in to":
            hint = _security_hint(settings)
        elif "LOGINDISABLED" in reason or "password login" in reason:
            hint = "set security to 'tls' or 'starttls'"
        elif settings.oauth2_token:
            hint = "check the OAuth2 token: it may have expired or lack the IMAP scope"
        else:
            hint = (
                "check the username and password (providers with two-step sign-in need an "
                "app password, and some need IMAP switched on)"
            )
    elif isinstance(exc, TimeoutError):
        reason, hint = f"no answer within {settings.timeout:g} s", _security_hint(settings)
    elif isinstance(exc, socket.gaierror):
        reason, hint = "the host name does not resolve", "check the host name"
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connection refused (nothing listens there)"
        hint = "check the host and the port (usually 993 for TLS, 143 for STARTTLS)"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        reason = f"the server's certificate is not trusted ({exc.verify_message})"
        hint = "check that the host name matches the certificate"
    elif isinstance(exc, ssl.SSLError):
        reason, hint = f"the TLS handshake failed ({exc.reason or exc})", _security_hint(settings)
    elif isinstance(exc, ConnectionError):
        reason, hint = "the server closed the connection", _security_hint(settings)
    else:
        reason, hint = _reason(exc) or type(exc).__name__, _security_hint(settings)
    reason = _scrub(reason, _secret_forms(settings))
    return f"{name}: cannot {step} IMAP server {where}: {reason}; {hint}"


def _security_hint(settings: ImapSettings) -> str:
    if settings.security is not Security.TLS and settings.port == 993:
        return "port 993 expects TLS from the start: set security to 'tls'"
    if settings.security is Security.TLS and settings.port == 143:
        return "port 143 speaks plain IMAP first: set security to 'starttls'"
    return (
        "check the host, the port and the security setting (TLS is usually on port 993, "
        "STARTTLS on 143) and any firewall in between"
    )


def _ssl_context(settings: ImapSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not settings.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# -- the IMAP wire format --------------------------------------------------------------------


def _quoted(text: str) -> str:
    """An IMAP quoted string; refuses what a quoted string cannot carry."""
    if _CONTROL.search(text):
        raise ValueError(f"line breaks and control characters cannot go to IMAP: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _folder_argument(folder: str) -> str:
    if not folder or _CONTROL.search(folder):
        raise ValueError(f"not a folder name: {folder!r}")
    return _quoted(encode_folder_name(folder))


def _message_id(message_id: str) -> str:
    """``<id@host>`` from a Message-ID with or without brackets; ValueError for anything that
    could break out of a search (quotes, spaces, line breaks, non-ASCII)."""
    match = _MESSAGE_ID.fullmatch(message_id.strip())
    if match is None or "\\" in message_id:
        raise ValueError(f"not a Message-ID like <id@example.com>: {message_id!r}")
    return f"<{match.group(1)}>"


def _same_message_id(header: str, wanted: str) -> bool:
    # Folding may have split the header; ids are compared without their brackets' padding.
    value = "".join(header.split())
    return value == wanted or value == wanted[1:-1]


def _same_folder(a: str, b: str) -> bool:
    # INBOX is case-insensitive (RFC 3501 5.1); every other name is exact.
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


def _words(line: bytes | bytearray | str) -> str:
    """A server reply as one line of text, safe to show."""
    text = line if isinstance(line, str) else bytes(line).decode("utf-8", "replace")
    return " ".join(_CONTROL.sub(" ", text).split())


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:1].lower() + text[1:]


def _response_code(line: bytes) -> tuple[str | None, str | None]:
    """The ``[CODE value]`` at the start of a reply's text, e.g. ("TRYCREATE", None)."""
    match = _RESPONSE_CODE.match(bytes(line).lstrip())
    if match is None:
        return None, None
    value = match.group("value")
    return match.group("code").decode(), value.decode("ascii", "replace") if value else None


def _folder_state(folder: str, lines: list[bytes]) -> FolderState:
    numbers: dict[str, int] = {}
    for line in lines:
        raw = bytes(line)
        code, value = _response_code(raw[3:] if raw.startswith(b"OK ") else raw)
        if code in ("UIDVALIDITY", "UIDNEXT") and value and value.isdigit():
            numbers[code] = int(value)
        words = raw.split()
        if len(words) == 2 and words[1] == b"EXISTS" and words[0].isdigit():
            numbers["EXISTS"] = int(words[0])
    return FolderState(
        folder, numbers.get("UIDVALIDITY"), numbers.get("UIDNEXT"), numbers.get("EXISTS")
    )


def _uid_set(uids: list[int]) -> str:
    """A UID set with runs as ranges: [1, 2, 3, 7] -> ``1:3,7``."""
    parts: list[str] = []
    ordered = sorted(set(uids))
    start = previous = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid is not None and uid == previous + 1:
            previous = uid
            continue
        parts.append(str(start) if start == previous else f"{start}:{previous}")
        if uid is not None:
            start = previous = uid
    return ",".join(parts)


def _fetched_bodies(lines: list[bytes]) -> dict[int, bytes]:
    """The body of each message in FETCH replies, by UID. A reply is a ``n FETCH (...`` line,
    the body as a literal (a bytearray) and the rest of the line; the UID may come before or
    after the body. Replies without a body (a flag change the server reports) are left out."""
    found: dict[int, bytes] = {}
    text: bytes | None = None
    body: bytes | None = None

    def finish() -> None:
        if text is not None and body is not None:
            match = _FETCH_UID.search(text)
            if match is not None:
                found[int(match.group(1))] = body

    for line in lines:
        if isinstance(line, bytearray):
            if text is not None and body is None:
                body = bytes(line)
            continue
        raw = bytes(line)
        if _FETCH_START.match(raw):
            finish()
            text, body = raw, None
        elif text is not None:
            text += b" " + raw
    finish()
    return found


def _parse_list(lines: list[bytes]) -> list[str]:
    """Folder names from LIST replies (``(attrs) "delim" name``), skipping those that can't
    be opened; a name may be an atom, a quoted string or a literal (the next line)."""
    folders: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if isinstance(line, bytearray):
            continue  # a literal already consumed below
        match = _LIST_LINE.match(bytes(line))
        if match is None:
            continue
        attributes = match.group("attributes").lower().split()
        raw = match.group("name")
        if _LITERAL.search(raw) and index < len(lines):
            raw = bytes(lines[index])
            index += 1
        elif raw.startswith(b'"') and raw.endswith(b'"') and len(raw) >= 2:
            raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
        if b"\\noselect" in attributes or b"\\nonexistent" in attributes:
            continue
        folders.append(decode_folder_name(raw.decode("utf-8", "replace")))
    return folders


def _oauth2_error(challenge: bytes) -> str:
    """The status in a refused XOAUTH2 token's error challenge (base64 JSON), if any."""
    if not challenge:
        return ""
    try:
        payload = json.loads(base64.b64decode(challenge[1:].strip(), validate=True))
    except (ValueError, binascii.Error):
        return ""
    status = payload.get("status") if isinstance(payload, dict) else None
    return f" (OAuth2 status {status})" if status else ""


def encode_folder_name(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3): ``Entwürfe`` ->
    ``Entw&APw-rfe``."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_folder_name(name: str) -> str:
    """The readable form of a folder name in modified UTF-7; malformed parts stay as sent."""

    def decode(match: re.Match[str]) -> str:
        text = match.group(1)
        if not text:
            return "&"
        data = text.replace(",", "/")
        try:
            return base64.b64decode(data + "=" * (-len(data) % 4)).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return match.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", decode, name)


def _secret_forms(settings: ImapSettings) -> tuple[str, ...]:
    """Every form in which a secret crosses the wire: as is, and base64 as SASL sends it."""
    forms: list[str] = []
    for secret in (settings.password, settings.oauth2_token):
        if secret:
            forms += [secret, _b64(secret)]
    if settings.oauth2_token:
        sasl = f"user={settings.username}\x01auth=Bearer {settings.oauth2_token}\x01\x01"
        forms.append(_b64(sasl))
    # Longest first, so a secret inside a longer form doesn't break that form's match.
    return tuple(sorted(forms, key=len, reverse=True))


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class _HideLogins(logging.Filter):
    """aioimaplib logs every line it sends at DEBUG; XOAUTH2's line is the token in base64."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "AUTHENTICATE" in message or " LOGIN " in message:
            record.msg, record.args = "Sending : (a login command, not shown)", ()
        return True


# Filters apply where a record is made: aioimaplib logs on its inner module's logger.
logging.getLogger("aioimaplib.aioimaplib").addFilter(_HideLogins())
