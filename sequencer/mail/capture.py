"""An SMTP server that keeps what it receives, for `sequencer demo` and local trials.

It runs on the caller's event loop (aiosmtpd's protocol under ``loop.create_server``), listens
on loopback only, accepts every recipient and never relays anything anywhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Captured:
    """One message as the server accepted it."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    received_at: datetime

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def message_id(self) -> str:
        return str(self.message.get("Message-ID", "")).strip()


@dataclass
class _Handler:
    messages: list[Captured] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode()
        self.messages.append(
            Captured(
                mail_from=str(envelope.mail_from or ""),
                recipients=tuple(str(r) for r in envelope.rcpt_tos),
                data=data,
                received_at=datetime.now(UTC),
            )
        )
        self.arrived.set()
        return "250 2.0.0 kept"


class CaptureServer:
    """``async with CaptureServer() as server:`` then send to ``server.port`` on loopback."""

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self.host = host
        self._port = port
        self._handler = _Handler()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the capture server is not running")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def messages(self) -> list[Captured]:
        """Everything accepted so far, oldest first."""
        return self._handler.messages

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        handler = self._handler

        def protocol() -> Any:
            return SMTP(handler, hostname="capture.localhost", enable_SMTPUTF8=True)

        self._server = await loop.create_server(protocol, self.host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> CaptureServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
