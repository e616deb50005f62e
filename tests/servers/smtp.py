"""Real SMTP servers for tests: aiosmtpd on loopback, recording what it keeps, optionally
requiring a login, and a variant that misbehaves on purpose, chosen by the recipient."""

from __future__ import annotations

import asyncio
import base64
import binascii
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
SERVER_NAME = "mx.test"
START_ATTEMPTS = 3
READY_TIMEOUT = 5.0


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 and mx.test, made with the openssl tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS tests need the openssl tool: apt-get install openssl")
    certificate, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    command = [openssl, "req", "-x509", "-nodes", "-days", "2", "-subj", f"/CN={SERVER_NAME}"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-addext", f"subjectAltName=IP:{HOST},DNS:{SERVER_NAME}"]
    command += ["-keyout", str(key), "-out", str(certificate)]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    return certificate, key


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server kept: the envelope, the bytes as received, and the parsed form."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    parsed: EmailMessage
    reply: str | None  # what the server answered; None when it hung up instead


class RecordingSMTPServer:
    """An aiosmtpd server on 127.0.0.1 at a free port that accepts and records every message.

    With ``username`` and ``password`` (or ``oauth2_token``) it offers AUTH PLAIN, LOGIN and
    XOAUTH2, even over plain text (loopback only), and refuses MAIL FROM until the client logs
    in. With ``tls`` and a ``certificate`` (certificate and key files) it speaks TLS from the
    first byte (``"implicit"``) or insists on STARTTLS (``"starttls"``).
    Use as a context manager or call ``start()``/``stop()``; ``reset()`` forgets everything.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        oauth2_token: str | None = None,
        tls: Literal["implicit", "starttls"] | None = None,
        certificate: tuple[Path, Path] | None = None,
    ) -> None:
        if (tls is None) != (certificate is None):
            raise ValueError("tls and certificate go together")
        self.tls = tls
        self.certificate = certificate
        self.host = HOST
        self.port = port or 0
        self._fixed_port = bool(port)
        self.username = username
        self.password = password
        self.oauth2_token = oauth2_token
        self._changed = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._peers: set[object] = set()
        self._logins: list[tuple[str, bool]] = []
        self._sessions: set[SMTP] = set()
        self._controller: _Controller | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Listen on 127.0.0.1; picks a free port unless one was given."""
        for attempt in range(1, START_ATTEMPTS + 1):
            if not self._fixed_port:
                self.port = free_port()
            controller = self._controller_for(self.port)
            try:
                controller.start()
            except OSError:
                controller.loop.close()
                # Another process may have taken the free port between probe and bind.
                if self._fixed_port or attempt == START_ATTEMPTS:
                    raise
                continue
            self._controller = controller
            return

    def stop(self) -> None:
        """Hang up on every client still connected, then stop listening."""
        controller = self._controller
        if controller is None:
            return
        self._controller = None
        # Closing sessions on the server's own loop lets each end cleanly before the loop stops.
        asyncio.run_coroutine_threadsafe(self._hang_up_all(), controller.loop).result(READY_TIMEOUT)
        controller.stop()

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

    def reset(self) -> None:
        """Forget recorded messages, sessions and logins (between tests on a shared server)."""
        with self._changed:
            self._messages.clear()
            self._peers.clear()
            self._logins.clear()

    # -- what happened -------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Every message kept so far, in arrival order."""
        with self._changed:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """How many client sessions said EHLO or HELO."""
        with self._changed:
            return len(self._peers)

    @property
    def logins(self) -> list[tuple[str, bool]]:
        """(mechanism, succeeded) for every AUTH attempt."""
        with self._changed:
            return list(self._logins)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were kept; fails after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                raise AssertionError(
                    f"expected {count} message(s) within {timeout} s, got {len(self._messages)}"
                )
            return list(self._messages)

    # -- behaviour (subclasses override these) ------------------------------------------

    async def on_mail(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._requires_login and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def on_rcpt(self, server: SMTP, envelope: Envelope, address: str) -> str:
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def on_data(self, server: SMTP, envelope: Envelope) -> str:
        reply = "250 2.0.0 OK: queued"
        self._keep(envelope, reply)
        return reply

    async def on_data_command(self, server: SMTP, envelope: Envelope) -> None:
        """Called when DATA arrives, before the 354; may hang up."""

    # -- plumbing ------------------------------------------------------------------------

    @property
    def _requires_login(self) -> bool:
        return self.username is not None

    def _controller_for(self, port: int) -> _Controller:
        options: dict[str, Any] = {}
        if self._requires_login:
            # aiosmtpd only counts STARTTLS as TLS, so implicit TLS needs this as well.
            options.update(auth_require_tls=False, authenticator=self._authenticate)
        if self.certificate is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.certificate)
            if self.tls == "implicit":
                options["ssl_context"] = context
            else:
                options.update(tls_context=context, require_starttls=True)
        return _Controller(
            self,
            _Handler(self),
            hostname=HOST,
            port=port,
            server_hostname=SERVER_NAME,
            ready_timeout=READY_TIMEOUT,
            **options,
        )

    def _keep(self, envelope: Envelope, reply: str | None) -> None:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            raw=raw,
            parsed=parsed,
            reply=reply,
        )
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()

    def _seen(self, peer: object) -> None:
        with self._changed:
            self._peers.add(peer)

    def _record_login(self, mechanism: str, success: bool) -> None:
        with self._changed:
            self._logins.append((mechanism, success))

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        success = (
            isinstance(data, LoginPassword)
            and self.password is not None
            and data.login.decode() == self.username
            and data.password.decode() == self.password
        )
        self._record_login(mechanism, success)
        return AuthResult(success=success, handled=False)

    def _check_xoauth2(self, blob: str) -> bool:
        try:
            decoded = base64.b64decode(blob, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        fields = dict(part.split("=", 1) for part in decoded.split("\x01") if "=" in part)
        success = (
            self.oauth2_token is not None
            and fields.get("user") == self.username
            and fields.get("auth") == f"Bearer {self.oauth2_token}"
        )
        self._record_login("XOAUTH2", success)
        return success

    async def _hang_up_all(self) -> None:
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        # One turn of the loop delivers connection_lost, which ends each session's task.
        await asyncio.sleep(0)


class FaultySMTPServer(RecordingSMTPServer):
    """A recording server that misbehaves according to the recipient's local part:

    - ``ok-*``: accepted
    - ``tempfail-rcpt-*``: 451 4.3.0 at RCPT
    - ``busy-rcpt-*``: 421 4.7.0 at RCPT, then the server hangs up
    - ``reject-rcpt-*``: 550 5.1.1 at RCPT
    - ``tempfail-data-*``: 451 4.3.0 after the content
    - ``reject-data-*``: 554 5.7.1 after the content
    - ``drop-before-data-*``: hangs up on the DATA command, without a 354
    - ``drop-after-data-*``: takes the whole content, then hangs up without a reply (kept)
    - ``slow-after-data-*``: takes the content and replies only after ``stall_seconds`` (kept)

    Any other recipient is accepted. Kept messages are those the recipient may have got.
    With ``messages_per_session`` set, the server hangs up without a reply on the MAIL FROM
    after that many, as a server does that drops an idle connection just as it is reused.

    With a ``plan`` (recipient address -> one fault name or ``"ok"`` per delivery attempt), a
    planned recipient's n-th attempt (counted at RCPT TO) meets the plan's n-th entry, and
    ``"ok"`` once the plan runs out: a schedule of faults that a seeded test can lay out and
    check exactly. ``attempts`` lists every (recipient, fault) the server applied, in order.
    """

    def __init__(
        self,
        *,
        stall_seconds: float = 5.0,
        messages_per_session: int | None = None,
        plan: Mapping[str, Sequence[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stall_seconds = stall_seconds
        self.messages_per_session = messages_per_session
        self._mail_commands: weakref.WeakKeyDictionary[Session, int] = weakref.WeakKeyDictionary()
        for faults in (plan or {}).values():
            unknown = set(faults) - set(FAULTS) - {"ok"}
            if unknown:
                raise ValueError(f"unknown fault(s) in the plan: {sorted(unknown)}")
        self.plan = {address.lower(): tuple(faults) for address, faults in (plan or {}).items()}
        self._attempts: list[tuple[str, str]] = []
        self._faults: weakref.WeakKeyDictionary[Envelope, str] = weakref.WeakKeyDictionary()

    @property
    def attempts(self) -> list[tuple[str, str]]:
        """(recipient, fault or "ok") for every RCPT TO, in arrival order."""
        with self._changed:
            return list(self._attempts)

    def reset(self) -> None:
        super().reset()
        with self._changed:
            self._attempts.clear()

    def _fault_at_rcpt(self, envelope: Envelope, address: str) -> str | None:
        """The fault this attempt meets: the plan's next entry, else the one the name says."""
        key = address.lower()
        with self._changed:
            if key in self.plan:
                done = sum(1 for recipient, _ in self._attempts if recipient == key)
                faults = self.plan[key]
                kind: str | None = faults[done] if done < len(faults) else "ok"
            else:
                kind = _fault(address)
            self._attempts.append((key, kind or "ok"))
        if kind is not None and kind != "ok":
            self._faults.setdefault(envelope, kind)  # the first faulty recipient decides
        return None if kind == "ok" else kind

    def _fault_of(self, envelope: Envelope) -> str | None:
        return self._faults.get(envelope)

    async def on_mail(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        count = self._mail_commands[session] = self._mail_commands.get(session, 0) + 1
        if self.messages_per_session is not None and count > self.messages_per_session:
            await _hang_up(server)
        return await super().on_mail(server, session, envelope, address, options)

    async def on_rcpt(self, server: SMTP, envelope: Envelope, address: str) -> str:
        kind = self._fault_at_rcpt(envelope, address)
        if kind == "tempfail-rcpt":
            return "451 4.3.0 Temporary failure, please try again later"
        if kind == "reject-rcpt":
            return "550 5.1.1 The email account that you tried to reach does not exist"
        if kind == "busy-rcpt":
            await server.push("421 4.7.0 Too many connections, closing transmission channel")
            await _hang_up(server)
        return await super().on_rcpt(server, envelope, address)

    async def on_data_command(self, server: SMTP, envelope: Envelope) -> None:
        if self._fault_of(envelope) == "drop-before-data":
            await _hang_up(server)

    async def on_data(self, server: SMTP, envelope: Envelope) -> str:
        kind = self._fault_of(envelope)
        if kind == "tempfail-data":
            return "451 4.3.0 Mail server temporarily rejected message"
        if kind == "reject-data":
            return "554 5.7.1 Message rejected as spam"
        if kind == "drop-after-data":
            self._keep(envelope, None)
            await _hang_up(server)
        if kind == "slow-after-data":
            reply = "250 2.0.0 OK: queued, eventually"
            self._keep(envelope, reply)
            await asyncio.sleep(self.stall_seconds)
            return reply
        return await super().on_data(server, envelope)


FAULTS = (
    "tempfail-rcpt",
    "busy-rcpt",
    "reject-rcpt",
    "tempfail-data",
    "reject-data",
    "drop-before-data",
    "drop-after-data",
    "slow-after-data",
)


def _fault(address: str) -> str | None:
    local = address.rsplit("@", 1)[0].lower()
    return next((kind for kind in FAULTS if local.startswith(kind + "-")), None)


async def _hang_up(server: SMTP) -> None:
    """Close the connection without a reply. Never returns: closing cancels the session's task,
    which ends it the way a vanished client would."""
    assert server.transport is not None
    server.transport.close()
    await asyncio.Event().wait()


class _Handler:
    """aiosmtpd's hooks, handed on to the owning server object."""

    def __init__(self, owner: RecordingSMTPServer) -> None:
        self.owner = owner

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        return await self.owner.on_mail(server, session, envelope, address, mail_options)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        return await self.owner.on_rcpt(server, envelope, address)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self.owner.on_data(server, envelope)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        # aiosmtpd has no XOAUTH2; any handler method named auth_<MECHANISM> adds one.
        success = len(args) == 2 and self.owner._check_xoauth2(args[1])
        return AuthResult(success=success, handled=False)


class _Session(SMTP):
    """aiosmtpd's per-connection protocol, reporting sessions and DATA commands to the owner."""

    def __init__(self, owner: RecordingSMTPServer, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.owner._sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._sessions.discard(self)
        super().connection_lost(error)

    async def smtp_EHLO(self, hostname: str) -> None:
        assert self.session is not None
        self.owner._seen(self.session.peer)
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        assert self.session is not None
        self.owner._seen(self.session.peer)
        await super().smtp_HELO(hostname)

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd has no hook between the DATA command and its 354 reply.
        if self.envelope is not None and self.envelope.rcpt_tos:
            await self.owner.on_data_command(self, self.envelope)
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def __init__(self, owner: RecordingSMTPServer, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner

    def factory(self) -> SMTP:
        return _Session(self.owner, self.handler, **self.SMTP_kwargs)
