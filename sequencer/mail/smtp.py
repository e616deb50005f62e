"""Sending over SMTP: pooled connections per mailbox, every reply mapped to a SendOutcome."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType

import aiosmtplib
from aiosmtplib.email import parse_address

from sequencer.core.errors import ConfigError, MailboxUnavailable
from sequencer.core.mailbox_config import Security
from sequencer.mail.servers import NOT_IN_HOSTNAME, check_server

log = logging.getLogger(__name__)

# An idle connection older than this is closed rather than reused: servers drop idle sessions
# (RFC 5321 allows them 5 minutes, some providers are quicker) and a dead one costs a timeout.
IDLE_LIMIT = 60.0
# QUIT is a courtesy; it must never hold up closing the pool.
QUIT_TIMEOUT = 5.0
_START_INPUT = 354
_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_ENHANCED_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach and log in to one mailbox's SMTP server; secrets stay out of the repr."""

    host: str
    port: int
    security: Security = Security.STARTTLS
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # XOAUTH2 (Gmail, Microsoft 365); used instead of the password when both are set.
    oauth2_token: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    pool_size: int = 2  # connections kept open per mailbox
    validate_certs: bool = True
    local_hostname: str | None = None

    def __post_init__(self) -> None:
        where = f"SMTP server {self.host}:{self.port}"
        security = check_server("SMTP", self.host, self.port, self.security, self.timeout)
        object.__setattr__(self, "security", security)
        if self.pool_size < 1:
            raise ConfigError(f"{where}: pool_size must be at least 1")
        has_secret = bool(self.password) or bool(self.oauth2_token)
        if self.username is None and has_secret:
            raise ConfigError(
                f"{where}: a password or OAuth2 token is set but no username; "
                "set the username to log in as"
            )
        if self.username is not None and not has_secret:
            raise ConfigError(
                f"{where}: username {self.username!r} is set but neither a password nor an "
                "OAuth2 token; set one, or drop the username for a server that needs no login"
            )
        if self.local_hostname is not None and (
            not self.local_hostname or NOT_IN_HOSTNAME.search(self.local_hostname)
        ):
            raise ConfigError(f"{where}: local_hostname {self.local_hostname!r} is not a host name")


class SendOutcome(StrEnum):
    ACCEPTED = "accepted"
    TRANSIENT = "transient"  # a 4xx reply at any stage: retry later
    REJECTED = "rejected"  # a 5xx reply for the recipient or the message: bounce, never retry
    MAILBOX_DOWN = "mailbox_down"  # nothing was sent and the mailbox's server is unusable
    UNKNOWN = "unknown"  # lost after the message went out: it may or may not be delivered


@dataclass(frozen=True)
class SendResult:
    """What became of one message: the outcome, and the server's words or what went wrong."""

    outcome: SendOutcome
    code: int | None
    message: str
    enhanced_status: str | None = None  # e.g. "5.1.1", from the reply text when present


class _ConnectFailed(Exception):
    """Opening a connection failed; ``result`` says how, for send() and check() alike."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.message)
        self.result = result


@dataclass(frozen=True)
class _Attempt:
    result: SendResult
    keep: bool  # the connection is fit for the next message
    stale: bool = False  # lost (or 421) at MAIL FROM: on a reused connection, an idle drop


class SmtpPool:
    """Pooled aiosmtplib connections for one mailbox; send() never raises for SMTP conditions."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        name: str,
        reload: Callable[[], SmtpSettings] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        #: Reads the settings again (secrets from their variable or file) before each new
        #: connection: OAuth2 access tokens expire within the hour and are refreshed outside.
        self._reload = reload
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._closed = False
        self._secrets = _secret_forms(settings)

    def __repr__(self) -> str:
        return f"SmtpPool({self.name!r}, {self._where})"

    async def __aenter__(self) -> SmtpPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def send(self, sender: str, recipient: str, message: bytes) -> SendResult:
        """Send one message to one recipient over a pooled connection and say what became of
        it. ``message`` is the complete RFC 5322 message; line endings become CRLF."""
        if self._closed:
            raise RuntimeError(f"the SMTP pool of {self.name} is closed")
        problem = _address_problem(recipient)
        if problem:
            return self._result(
                SendOutcome.REJECTED, None, f"recipient address {recipient!r} {problem}"
            )
        problem = _address_problem(sender)
        if problem:
            return self._result(
                SendOutcome.MAILBOX_DOWN,
                None,
                f"{self.name}: sender address {sender!r} {problem}; check the mailbox's address",
            )
        payload = _data_payload(message)
        async with self._slots:
            connection = self._take_idle()
            reused = connection is not None
            while True:
                if connection is None:
                    try:
                        connection, _ = await self._open()
                    except _ConnectFailed as failure:
                        return failure.result
                try:
                    attempt = await self._attempt(
                        connection, sender, recipient, payload, eight_bit=not message.isascii()
                    )
                except BaseException:
                    # Cancelled mid-conversation: the connection's state is unknowable.
                    connection.close()
                    raise
                self._release(connection, keep=attempt.keep)
                if attempt.stale and reused:
                    # The server had given up on the idle connection; nothing was sent, so a
                    # fresh connection may try once.
                    connection, reused = None, False
                    continue
                return attempt.result

    async def check(self) -> str:
        """Connect, secure and log in once, outside the pool, and summarise it in one line;
        raise MailboxUnavailable saying what to fix when that fails."""
        try:
            smtp, reply = await self._open()
        except _ConnectFailed as failure:
            raise MailboxUnavailable(failure.result.message) from failure.__cause__
        await _quit(smtp)
        s = self.settings
        security = {Security.TLS: "TLS", Security.STARTTLS: "STARTTLS", Security.NONE: "no TLS"}
        login = f"authenticated as {s.username}" if s.username else "no login"
        first_line = _server_words(reply.message.splitlines()[0] if reply.message else "")
        detail = f"{reply.code} {first_line}".rstrip()
        return self._scrub(f"{self._where} {security[s.security]}, {login} ({detail})")

    async def close(self) -> None:
        """Say QUIT on idle connections and close them; sends still running close theirs."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(smtp) for smtp, _ in idle))

    # -- connections ---------------------------------------------------------------------

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            smtp, since = self._idle.pop()
            if smtp.is_connected and now - since < IDLE_LIMIT:
                return smtp
            smtp.close()
        return None

    def _release(self, smtp: aiosmtplib.SMTP, *, keep: bool) -> None:
        if keep and not self._closed and smtp.is_connected:
            self._idle.append((smtp, time.monotonic()))
        else:
            smtp.close()

    def _refresh(self) -> None:
        """Take up a changed secret; a secret that cannot be read now keeps the last one."""
        if self._reload is None:
            return
        try:
            fresh = self._reload()
        except ConfigError as exc:
            log.warning("%s: keeping the last SMTP secret read: %s", self.name, exc)
            return
        if fresh != self.settings:
            self.settings = fresh
            self._secrets = _secret_forms(fresh)

    async def _open(self) -> tuple[aiosmtplib.SMTP, aiosmtplib.SMTPResponse]:
        """A connected, secured, logged-in connection and the last reply that proved it."""
        self._refresh()
        s = self.settings
        # Credentials are not handed to aiosmtplib: logging in by hand tells a refused login
        # apart from a refused connection, and keeps secrets off the SMTP object.
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            local_hostname=s.local_hostname,
            timeout=s.timeout,
            use_tls=s.security is Security.TLS,
            # Never fall back to plain text when STARTTLS was asked for.
            start_tls=False,
            validate_certs=s.validate_certs,
        )
        step = "connect to"
        try:
            await smtp.connect()
            if s.security is Security.STARTTLS:
                step = "start TLS with"
                await smtp.starttls()
            step = "say EHLO to"
            reply = await _greet(smtp)
            if s.username is not None:
                step = "log in to"
                reply = await self._log_in(smtp, s.username)
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise _ConnectFailed(self._connect_failure(step, exc)) from exc
        except BaseException:
            smtp.close()
            raise
        log.debug("opened an SMTP connection to %s for %s", self._where, self.name)
        return smtp, reply

    async def _log_in(self, smtp: aiosmtplib.SMTP, username: str) -> aiosmtplib.SMTPResponse:
        s = self.settings
        if s.oauth2_token:
            if "xoauth2" not in smtp.server_auth_methods:
                raise aiosmtplib.SMTPNotSupported("the server does not offer XOAUTH2 login")
            return await smtp.auth_xoauth2(username, s.oauth2_token)
        assert s.password is not None  # SmtpSettings insists on a secret with a username
        return await smtp.login(username, s.password)

    # -- one transaction -----------------------------------------------------------------

    async def _attempt(
        self,
        smtp: aiosmtplib.SMTP,
        sender: str,
        recipient: str,
        payload: bytes,
        *,
        eight_bit: bool,
    ) -> _Attempt:
        timeout = self.settings.timeout
        options: list[str] = []
        encoding = "ascii"
        if not (sender.isascii() and recipient.isascii()):
            if not smtp.supports_extension("smtputf8"):
                return self._no_smtputf8(sender, recipient)
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if eight_bit and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        stage = "MAIL FROM"
        try:
            await smtp.mail(sender, options=options, encoding=encoding, timeout=timeout)
            stage = "RCPT TO"
            await smtp.rcpt(recipient, encoding=encoding, timeout=timeout)
            # DATA and the content go out as separate steps, not via smtp.data(): a connection
            # lost before the 354 means nothing was sent, one lost after the content went out
            # means the message may have been delivered, and smtp.data() can't tell them apart.
            stage = "DATA"
            reply = await smtp.execute_command(b"DATA", timeout=timeout)
            if reply.code != _START_INPUT:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
            protocol = smtp.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            protocol.write(payload)
            stage = "message"
            reply = await protocol.read_response(timeout=timeout)
            if not 200 <= reply.code < 300:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        except aiosmtplib.SMTPResponseException as exc:
            return await self._refused(smtp, stage, sender, exc)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return self._lost(stage, exc)
        words = _server_words(reply.message)
        return _Attempt(
            self._result(SendOutcome.ACCEPTED, reply.code, words, _enhanced(reply.code, words)),
            keep=True,
        )

    async def _refused(
        self,
        smtp: aiosmtplib.SMTP,
        stage: str,
        sender: str,
        exc: aiosmtplib.SMTPResponseException,
    ) -> _Attempt:
        code = exc.code
        if not 400 <= code < 600:
            # Not an SMTP refusal (e.g. -1 for a garbled reply): the conversation broke down.
            return self._lost(stage, exc)
        words = _server_words(exc.message)
        enhanced = _enhanced(code, words)
        if code < 500:
            result = self._result(SendOutcome.TRANSIENT, code, words, enhanced)
        elif stage == "MAIL FROM":
            # A refused sender says nothing about the prospect: bouncing (and suppressing) the
            # recipient would be wrong, while every later send from this mailbox would fail.
            result = self._result(
                SendOutcome.MAILBOX_DOWN,
                code,
                f"{self.name}: {self._where} refused the sender <{sender}> at MAIL FROM: "
                f"{code} {words}; check the mailbox's address and that its login may send as it",
                enhanced,
            )
        else:
            result = self._result(SendOutcome.REJECTED, code, words, enhanced)
        # A 421 to MAIL FROM on a reused connection is often the server ending an idle session.
        stale = stage == "MAIL FROM" and code == 421
        return _Attempt(result, keep=await _reset(smtp, self.settings.timeout), stale=stale)

    def _lost(self, stage: str, exc: BaseException) -> _Attempt:
        if isinstance(exc, TimeoutError):
            reason = f"no reply within {self.settings.timeout:g} s"
        elif isinstance(exc, aiosmtplib.SMTPResponseException):
            reason = f"the reply was not SMTP ({_server_words(exc.message)})"
        else:
            reason = "the connection was lost"
        if stage == "message":
            message = (
                f"{self.name}: {self._where}: {reason} after the message was sent, before the "
                "server confirmed it; it may or may not have been delivered"
            )
            return _Attempt(self._result(SendOutcome.UNKNOWN, None, message), keep=False)
        message = f"{self.name}: {self._where}: {reason} at {stage}; nothing was sent"
        return _Attempt(
            self._result(SendOutcome.MAILBOX_DOWN, None, message),
            keep=False,
            stale=stage == "MAIL FROM",
        )

    def _no_smtputf8(self, sender: str, recipient: str) -> _Attempt:
        unsupported = f"{self._where} does not accept internationalised addresses (SMTPUTF8)"
        if not recipient.isascii():
            result = self._result(
                SendOutcome.REJECTED, None, f"{unsupported}, so {recipient} cannot be reached"
            )
        else:
            result = self._result(
                SendOutcome.MAILBOX_DOWN, None, f"{self.name}: {unsupported}, needed for {sender}"
            )
        return _Attempt(result, keep=True)

    # -- messages ------------------------------------------------------------------------

    def _connect_failure(self, step: str, exc: BaseException) -> SendResult:
        """Translate a failure to connect, secure or log in into a result with a fix in it."""
        outcome = SendOutcome.MAILBOX_DOWN
        code: int | None = None
        enhanced: str | None = None
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 0:
            code = exc.code
            words = _server_words(exc.message)
            enhanced = _enhanced(code, words)
            reason = f"{code} {words}".rstrip()
            if 400 <= code < 500:
                outcome = SendOutcome.TRANSIENT
                hint = "the server asks to try again later"
            elif isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                hint = self._credentials_hint()
            else:
                hint = (
                    "the server refuses this client; check the host and port, and that the "
                    "provider allows SMTP for this mailbox"
                )
        else:
            reason, hint = self._failure_reason(step, exc)
        target = self._where
        if step == "log in to":
            target += f" as {self.settings.username}"
        message = f"{self.name}: cannot {step} {target}: {reason}; {hint}"
        return self._result(outcome, code, message, enhanced)

    def _failure_reason(self, step: str, exc: BaseException) -> tuple[str, str]:
        """What went wrong without a usable reply, and what to check."""
        timeout = self.settings.timeout
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return f"the reply was not SMTP ({_server_words(exc.message)})", self._security_hint()
        if isinstance(exc, aiosmtplib.SMTPConnectError) and exc.__cause__ is not None:
            exc = exc.__cause__  # the network error behind it says more
        if isinstance(exc, TimeoutError):
            return f"no answer within {timeout:g} s", self._security_hint()
        if isinstance(exc, socket.gaierror):
            return "the host name does not resolve", "check the host name"
        if isinstance(exc, ConnectionRefusedError):
            return (
                "connection refused (nothing listens there)",
                "check the host and the port (usually 587 for STARTTLS, 465 for TLS)",
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"the server's certificate is not trusted ({exc.verify_message})",
                "check that the host name matches the certificate; turn validate_certs off "
                "only for a test server",
            )
        if isinstance(exc, ssl.SSLError):
            return f"the TLS handshake failed ({exc.reason or exc})", self._security_hint()
        if isinstance(exc, ConnectionError):
            return "the server closed the connection", self._security_hint()
        if step == "start TLS with":
            return (
                "the server does not offer STARTTLS",
                "set security to 'tls' if the port expects TLS from the start (usually 465)",
            )
        if step == "log in to":
            if self.settings.security is Security.NONE:
                hint = "most servers offer login only over TLS: set security to 'starttls' or 'tls'"
            else:
                hint = "check that the provider allows SMTP login for this mailbox"
            return _first_sentence(exc), hint
        return _first_sentence(exc), self._security_hint()

    def _security_hint(self) -> str:
        s = self.settings
        if s.security is not Security.TLS and s.port == 465:
            return "port 465 usually expects TLS from the start: set security to 'tls'"
        if s.security is Security.TLS and s.port in (25, 587):
            return f"port {s.port} usually speaks plain SMTP first: set security to 'starttls'"
        return (
            "check the host, the port and the security setting (TLS is usually on port 465, "
            "STARTTLS on 587) and any firewall in between"
        )

    def _credentials_hint(self) -> str:
        if self.settings.oauth2_token:
            return "check the OAuth2 token: it may have expired or lack the SMTP scope"
        return (
            "check the username and password (providers with two-step sign-in need an app password)"
        )

    def _result(
        self, outcome: SendOutcome, code: int | None, message: str, enhanced: str | None = None
    ) -> SendResult:
        return SendResult(outcome, code, self._scrub(message), enhanced)

    def _scrub(self, text: str) -> str:
        # A server that echoes what it was sent must not leak a secret into logs or the UI.
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


async def _greet(smtp: aiosmtplib.SMTP) -> aiosmtplib.SMTPResponse:
    try:
        return await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:
        # Ancient servers know only HELO; a refused EHLO on a live connection deserves a try.
        if not smtp.is_connected:
            raise
        return await smtp.helo()


async def _reset(smtp: aiosmtplib.SMTP, timeout: float) -> bool:
    """Clear a refused envelope so the connection can carry the next message."""
    if not smtp.is_connected:
        return False
    try:
        await smtp.rset(timeout=timeout)
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
        return False
    return True


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        if smtp.is_connected:
            await smtp.quit(timeout=QUIT_TIMEOUT)
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def _data_payload(message: bytes) -> bytes:
    """The message as it travels after DATA: CRLF line ends, leading dots doubled, final dot."""
    text = _LINE_ENDINGS.sub(b"\r\n", message)
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    return _LEADING_DOT.sub(b"..", text) + b".\r\n"


def _address_problem(address: str) -> str | None:
    """Why an address can't go on a MAIL FROM or RCPT TO line, or None when it can."""
    try:
        parsed = parse_address(address)
    except ValueError:
        return "contains characters not allowed in an SMTP address"
    # aiosmtplib would quietly send to whatever address it can dig out of the text; a string
    # that isn't exactly one bare address is refused instead of rewritten.
    if parsed != address or "@" not in parsed:
        return "is not one plain email address"
    return None


def _server_words(text: str) -> str:
    """A reply's text on one line, without the enhanced status its continuation lines repeat."""
    # aiosmtplib decodes with surrogateescape; stray bytes become U+FFFD, not unencodable text.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    status = _ENHANCED_STATUS.match(lines[0])
    prefix = status.group(0) if status else None
    rest = [
        line[len(prefix) :].strip() if prefix and line.startswith(prefix) else line
        for line in lines[1:]
    ]
    return " ".join([lines[0], *rest])


def _enhanced(code: int, words: str) -> str | None:
    """The RFC 3463 status at the start of a reply, when its class matches the reply code."""
    status = _ENHANCED_STATUS.match(words)
    if status and str(code).startswith(status.group(1)):
        return status.group(0)
    return None


def _first_sentence(exc: BaseException) -> str:
    """An exception's first sentence, to sit inside one of our own."""
    text = str(exc).strip().split(". ")[0].rstrip(".")
    return text[:1].lower() + text[1:] if text else type(exc).__name__


def _secret_forms(settings: SmtpSettings) -> tuple[str, ...]:
    """Every form in which a secret crosses the wire: as is, and base64 as AUTH sends it."""
    user = settings.username or ""
    forms: list[str] = []
    for secret in (settings.password, settings.oauth2_token):
        if secret:
            forms += [secret, _b64(secret)]
    if settings.password:
        forms.append(_b64(f"\0{user}\0{settings.password}"))
    if settings.oauth2_token:
        forms.append(_b64(f"user={user}\x01auth=Bearer {settings.oauth2_token}\x01\x01"))
    # Longest first, so a secret inside a longer form doesn't break that form's match.
    return tuple(sorted(forms, key=len, reverse=True))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
