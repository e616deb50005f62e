"""SmtpPool against real SMTP servers on loopback: what arrives, and what each failure means."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.smtp import (
    HOST,
    FaultySMTPServer,
    RecordingSMTPServer,
    free_port,
    self_signed_certificate,
)

from sequencer.core.errors import ConfigError, MailboxUnavailable
from sequencer.mail.credentials import resolve_secret
from sequencer.mail.smtp import Security, SendOutcome, SendResult, SmtpPool, SmtpSettings

SENDER = "ana.reyes@northwind.example"
PASSWORD = "correct-horse-battery-staple"
TOKEN = "ya29.a0AfH6SMBx-oauth-access-token"
# Short, so the timeout cases stay quick; the stalling server waits well past it.
TIMEOUT = 1.0

PoolFactory = Callable[..., SmtpPool]


def raw_message(recipient: str, subject: str = "Quick question") -> bytes:
    """A message whose bytes exercise the transfer: 8-bit text, and lines that start with dots
    (one a lone dot, which would end DATA early if not doubled on the wire)."""
    return (
        f"From: Ana Reyes <{SENDER}>\r\n"
        f"To: {recipient}\r\n"
        f"Subject: {subject}\r\n"
        "Message-ID: <touch-1.step-intro@northwind.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Hola Begoña, ¿qué tal?\r\n"
        ".a line that starts with a dot\r\n"
        "..and one with two\r\n"
        ".\r\n"
        "The line above is a lone dot.\r\n"
    ).encode()


def settings_for(port: int, **overrides: Any) -> SmtpSettings:
    values: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "security": Security.NONE,
        "timeout": TIMEOUT,
        "local_hostname": "client.test",
    }
    values.update(overrides)
    return SmtpSettings(**values)


def whole_chain(exc: BaseException) -> str:
    """An exception's text with every cause and context it carries."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(f"{seen!r} {seen}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# -- servers: started once per module, reset per test ----------------------------------------


@pytest.fixture(scope="module")
def recording_server() -> Iterator[RecordingSMTPServer]:
    with RecordingSMTPServer() as server:
        yield server


@pytest.fixture(scope="module")
def faulty_server() -> Iterator[FaultySMTPServer]:
    with FaultySMTPServer(stall_seconds=TIMEOUT * 3) as server:
        yield server


@pytest.fixture(scope="module")
def login_server() -> Iterator[RecordingSMTPServer]:
    with RecordingSMTPServer(username=SENDER, password=PASSWORD, oauth2_token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[RecordingSMTPServer]:
    with RecordingSMTPServer(
        username=SENDER, password=PASSWORD, tls="starttls", certificate=certificate
    ) as server:
        yield server


@pytest.fixture(scope="module")
def implicit_tls_server(certificate: tuple[Path, Path]) -> Iterator[RecordingSMTPServer]:
    with RecordingSMTPServer(tls="implicit", certificate=certificate) as server:
        yield server


@pytest.fixture
def server(recording_server: RecordingSMTPServer) -> RecordingSMTPServer:
    recording_server.reset()
    return recording_server


@pytest.fixture
def faulty(faulty_server: FaultySMTPServer) -> FaultySMTPServer:
    faulty_server.reset()
    return faulty_server


@pytest.fixture
def login(login_server: RecordingSMTPServer) -> RecordingSMTPServer:
    login_server.reset()
    return login_server


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    """Pools for the test, each closed at its end so no connection outlives it."""
    pools: list[SmtpPool] = []

    def make(port: int, **overrides: Any) -> SmtpPool:
        pool = SmtpPool(settings_for(port, **overrides), name=SENDER)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


# -- delivery --------------------------------------------------------------------------------


async def test_accepted_message_arrives_byte_for_byte(
    server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(server.port)
    message = raw_message("ok-maria@acme.example")

    result = await pool.send(SENDER, "ok-maria@acme.example", message)

    assert result.outcome is SendOutcome.ACCEPTED
    assert result.code == 250
    assert result.enhanced_status == "2.0.0"
    [received] = server.wait_for(1)
    assert received.raw == message
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ("ok-maria@acme.example",)
    assert received.parsed["Subject"] == "Quick question"
    assert "Begoña" in received.parsed.get_content()


async def test_bare_line_feeds_travel_as_crlf(
    server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(server.port)
    message = raw_message("ok-maria@acme.example").replace(b"\r\n", b"\n")

    result = await pool.send(SENDER, "ok-maria@acme.example", message)

    assert result.outcome is SendOutcome.ACCEPTED
    [received] = server.wait_for(1)
    assert received.raw == message.replace(b"\n", b"\r\n")


async def test_one_connection_carries_consecutive_sends(
    server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(server.port)

    first = await pool.send(SENDER, "ok-a@acme.example", raw_message("ok-a@acme.example"))
    second = await pool.send(SENDER, "ok-b@acme.example", raw_message("ok-b@acme.example"))

    assert (first.outcome, second.outcome) == (SendOutcome.ACCEPTED, SendOutcome.ACCEPTED)
    assert [m.rcpt_tos for m in server.wait_for(2)] == [
        ("ok-a@acme.example",),
        ("ok-b@acme.example",),
    ]
    assert server.connections == 1


async def test_concurrent_sends_share_at_most_pool_size_connections(
    server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(server.port, pool_size=3)
    recipients = [f"ok-{n}@acme.example" for n in range(10)]

    results = await asyncio.gather(
        *(
            pool.send(SENDER, r, raw_message(r, subject=f"Note {n}"))
            for n, r in enumerate(recipients)
        )
    )

    assert [r.outcome for r in results] == [SendOutcome.ACCEPTED] * 10
    received = server.wait_for(10)
    assert sorted(m.rcpt_tos[0] for m in received) == sorted(recipients)
    assert sorted(m.parsed["Subject"] for m in received) == sorted(f"Note {n}" for n in range(10))
    assert 1 <= server.connections <= 3


async def test_invalid_recipient_is_rejected_without_talking_to_the_server(
    server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(server.port)

    result = await pool.send(SENDER, "maria@acme.example>\r\nRCPT TO:<x@evil.example", b"Hi\r\n")

    assert result.outcome is SendOutcome.REJECTED
    assert "is not one plain email address" in result.message
    assert server.connections == 0


# -- failures: every fault a server can throw maps to one outcome --------------------------

FAULT_TABLE = [
    # local part, outcome, code, enhanced status, messages the server kept
    ("ok", SendOutcome.ACCEPTED, 250, "2.0.0", 1),
    ("tempfail-rcpt", SendOutcome.TRANSIENT, 451, "4.3.0", 0),
    ("busy-rcpt", SendOutcome.TRANSIENT, 421, "4.7.0", 0),
    ("reject-rcpt", SendOutcome.REJECTED, 550, "5.1.1", 0),
    ("tempfail-data", SendOutcome.TRANSIENT, 451, "4.3.0", 0),
    ("reject-data", SendOutcome.REJECTED, 554, "5.7.1", 0),
    ("drop-before-data", SendOutcome.MAILBOX_DOWN, None, None, 0),
    ("drop-after-data", SendOutcome.UNKNOWN, None, None, 1),
    ("slow-after-data", SendOutcome.UNKNOWN, None, None, 1),
]


@pytest.mark.parametrize(
    ("fault", "outcome", "code", "enhanced", "kept"),
    FAULT_TABLE,
    ids=[row[0] for row in FAULT_TABLE],
)
async def test_each_fault_maps_to_its_outcome(
    faulty: FaultySMTPServer,
    make_pool: PoolFactory,
    fault: str,
    outcome: SendOutcome,
    code: int | None,
    enhanced: str | None,
    kept: int,
) -> None:
    pool = make_pool(faulty.port)
    recipient = f"{fault}-maria@acme.example"

    result = await pool.send(SENDER, recipient, raw_message(recipient))

    assert (result.outcome, result.code, result.enhanced_status) == (outcome, code, enhanced)
    assert result.message
    if kept:
        assert [m.rcpt_tos for m in faulty.wait_for(kept)] == [(recipient,)]
    else:
        # The server would have recorded a delivery before replying; nothing may show up.
        await asyncio.sleep(0.05)
        assert faulty.messages == []


async def test_rejection_carries_the_servers_words(
    faulty: FaultySMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(faulty.port)
    recipient = "reject-rcpt-nobody@acme.example"

    result = await pool.send(SENDER, recipient, raw_message(recipient))

    assert result == SendResult(
        SendOutcome.REJECTED,
        550,
        "5.1.1 The email account that you tried to reach does not exist",
        "5.1.1",
    )


async def test_lost_after_data_is_unknown_yet_the_server_has_the_message(
    faulty: FaultySMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(faulty.port)
    recipient = "drop-after-data-maria@acme.example"
    message = raw_message(recipient)

    result = await pool.send(SENDER, recipient, message)

    assert result.outcome is SendOutcome.UNKNOWN
    assert f"{HOST}:{faulty.port}" in result.message
    assert "may or may not have been delivered" in result.message
    [received] = faulty.wait_for(1)
    assert received.raw == message
    assert received.reply is None


async def test_stalled_final_reply_is_unknown_after_the_timeout(
    faulty: FaultySMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(faulty.port)
    recipient = "slow-after-data-maria@acme.example"

    started = asyncio.get_running_loop().time()
    result = await pool.send(SENDER, recipient, raw_message(recipient))
    elapsed = asyncio.get_running_loop().time() - started

    assert result.outcome is SendOutcome.UNKNOWN
    assert "no reply within 1 s" in result.message
    assert TIMEOUT <= elapsed < TIMEOUT * 3


async def test_lost_before_data_is_mailbox_down_and_nothing_was_sent(
    faulty: FaultySMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(faulty.port)
    recipient = "drop-before-data-maria@acme.example"

    result = await pool.send(SENDER, recipient, raw_message(recipient))

    assert result.outcome is SendOutcome.MAILBOX_DOWN
    assert "at DATA; nothing was sent" in result.message
    await asyncio.sleep(0.05)
    assert faulty.messages == []


@pytest.mark.parametrize("fault", ["busy-rcpt", "drop-before-data", "drop-after-data"])
async def test_pool_carries_on_after_a_lost_connection(
    faulty: FaultySMTPServer, make_pool: PoolFactory, fault: str
) -> None:
    pool = make_pool(faulty.port)
    broken = f"{fault}-maria@acme.example"
    await pool.send(SENDER, broken, raw_message(broken))

    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))

    assert result.outcome is SendOutcome.ACCEPTED
    assert "ok-maria@acme.example" in [m.rcpt_tos[0] for m in faulty.messages]
    assert faulty.connections == 2


async def test_a_refused_recipient_leaves_the_connection_usable(
    faulty: FaultySMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(faulty.port)
    refused = "reject-rcpt-maria@acme.example"

    first = await pool.send(SENDER, refused, raw_message(refused))
    second = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))

    assert (first.outcome, second.outcome) == (SendOutcome.REJECTED, SendOutcome.ACCEPTED)
    assert faulty.connections == 1


async def test_pool_replaces_an_idle_connection_the_server_closed(
    make_pool: PoolFactory,
) -> None:
    with RecordingSMTPServer(port=free_port()) as server:
        pool = make_pool(server.port)
        await pool.send(SENDER, "ok-a@acme.example", raw_message("ok-a@acme.example"))
        server.stop()  # hangs up on the pooled connection, and comes back on the same port
        server.start()

        result = await pool.send(SENDER, "ok-b@acme.example", raw_message("ok-b@acme.example"))
        await pool.close()

        assert result.outcome is SendOutcome.ACCEPTED
        assert [m.rcpt_tos for m in server.wait_for(2)] == [
            ("ok-a@acme.example",),
            ("ok-b@acme.example",),
        ]
        assert server.connections == 2


async def test_pool_retries_once_when_a_reused_connection_dies_at_mail_from(
    make_pool: PoolFactory,
) -> None:
    with FaultySMTPServer(messages_per_session=1) as server:
        pool = make_pool(server.port)
        first = await pool.send(SENDER, "ok-a@acme.example", raw_message("ok-a@acme.example"))

        # The pooled connection looks alive but the server hangs up on MAIL FROM: nothing was
        # sent, so a fresh connection carries the message.
        second = await pool.send(SENDER, "ok-b@acme.example", raw_message("ok-b@acme.example"))
        await pool.close()

        assert (first.outcome, second.outcome) == (SendOutcome.ACCEPTED, SendOutcome.ACCEPTED)
        assert len(server.wait_for(2)) == 2
        assert server.connections == 2


# -- connecting ------------------------------------------------------------------------------


async def test_nothing_listening_is_mailbox_down_naming_host_and_port(
    make_pool: PoolFactory,
) -> None:
    port = free_port()
    pool = make_pool(port)

    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))

    assert result.outcome is SendOutcome.MAILBOX_DOWN
    assert result.code is None
    assert f"cannot connect to {HOST}:{port}: connection refused" in result.message
    assert result.message.startswith(SENDER)
    with pytest.raises(MailboxUnavailable, match=f"{HOST}:{port}: connection refused"):
        await pool.check()


async def test_pool_recovers_once_the_server_comes_up(make_pool: PoolFactory) -> None:
    port = free_port()
    pool = make_pool(port)
    down = await pool.send(SENDER, "ok-a@acme.example", raw_message("ok-a@acme.example"))

    with RecordingSMTPServer(port=port) as server:
        result = await pool.send(SENDER, "ok-b@acme.example", raw_message("ok-b@acme.example"))
        await pool.close()
        assert [m.rcpt_tos for m in server.wait_for(1)] == [("ok-b@acme.example",)]

    assert down.outcome is SendOutcome.MAILBOX_DOWN
    assert result.outcome is SendOutcome.ACCEPTED


async def test_check_summarises_a_working_server(
    server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    summary = await make_pool(server.port).check()

    assert summary == f"{HOST}:{server.port} no TLS, no login (250 mx.test)"
    assert server.messages == []


async def test_check_explains_a_tls_mode_that_does_not_fit_the_port(
    server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(server.port, security=Security.TLS)

    with pytest.raises(MailboxUnavailable) as caught:
        await pool.check()

    message = str(caught.value)
    assert message.startswith(f"{SENDER}: cannot connect to {HOST}:{server.port}")
    assert "TLS handshake failed" in message
    assert "security setting" in message


async def test_check_explains_a_server_without_starttls(
    server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(server.port, security=Security.STARTTLS)

    with pytest.raises(MailboxUnavailable, match="does not offer STARTTLS; set security to 'tls'"):
        await pool.check()
    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))

    # Never fall back to sending in the clear.
    assert result.outcome is SendOutcome.MAILBOX_DOWN
    assert server.messages == []


# -- TLS -------------------------------------------------------------------------------------
#
# The test certificate is self-signed, so these clients skip verification, except where the
# verification failure is the point.


async def test_starttls_login_and_send(
    starttls_server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    starttls_server.reset()
    pool = make_pool(
        starttls_server.port,
        security=Security.STARTTLS,
        username=SENDER,
        password=PASSWORD,
        validate_certs=False,
    )
    message = raw_message("ok-maria@acme.example")

    summary = await pool.check()
    result = await pool.send(SENDER, "ok-maria@acme.example", message)

    assert summary == (
        f"{HOST}:{starttls_server.port} STARTTLS, authenticated as {SENDER} "
        "(235 2.7.0 Authentication successful)"
    )
    assert result.outcome is SendOutcome.ACCEPTED
    assert [m.raw for m in starttls_server.wait_for(1)] == [message]


async def test_implicit_tls_send(
    implicit_tls_server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    implicit_tls_server.reset()
    pool = make_pool(implicit_tls_server.port, security=Security.TLS, validate_certs=False)

    summary = await pool.check()
    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))

    assert summary == f"{HOST}:{implicit_tls_server.port} TLS, no login (250 mx.test)"
    assert result.outcome is SendOutcome.ACCEPTED
    assert len(implicit_tls_server.wait_for(1)) == 1


@pytest.mark.parametrize("security", [Security.TLS, Security.STARTTLS])
async def test_untrusted_certificate_is_mailbox_down(
    implicit_tls_server: RecordingSMTPServer,
    starttls_server: RecordingSMTPServer,
    make_pool: PoolFactory,
    security: Security,
) -> None:
    server = implicit_tls_server if security is Security.TLS else starttls_server
    server.reset()
    pool = make_pool(server.port, security=security, username=SENDER, password=PASSWORD)

    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))

    assert result.outcome is SendOutcome.MAILBOX_DOWN
    assert "the server's certificate is not trusted (self-signed certificate)" in result.message
    assert server.messages == []


async def test_check_explains_starttls_against_an_implicit_tls_port(
    implicit_tls_server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(implicit_tls_server.port, security=Security.STARTTLS)

    # The client waits for a greeting while the server waits for a TLS handshake.
    with pytest.raises(MailboxUnavailable, match="no answer within 1 s; check the host, the port"):
        await pool.check()


# -- logging in ------------------------------------------------------------------------------


async def test_password_login_sends(login: RecordingSMTPServer, make_pool: PoolFactory) -> None:
    pool = make_pool(login.port, username=SENDER, password=PASSWORD)

    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))

    assert result.outcome is SendOutcome.ACCEPTED
    assert len(login.wait_for(1)) == 1
    assert login.logins == [("PLAIN", True)]


async def test_check_reports_the_login(login: RecordingSMTPServer, make_pool: PoolFactory) -> None:
    pool = make_pool(login.port, username=SENDER, password=PASSWORD)

    summary = await pool.check()

    assert summary == (
        f"{HOST}:{login.port} no TLS, authenticated as {SENDER} "
        "(235 2.7.0 Authentication successful)"
    )


async def test_wrong_password_is_mailbox_down_and_never_shown(
    login: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    wrong = "Wrong-Password-123"
    pool = make_pool(login.port, username=SENDER, password=wrong)

    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))
    with pytest.raises(MailboxUnavailable) as caught:
        await pool.check()

    assert result.outcome is SendOutcome.MAILBOX_DOWN
    assert result.code == 535
    assert result.enhanced_status == "5.7.8"
    message = str(caught.value)
    assert f"cannot log in to {HOST}:{login.port} as {SENDER}: 535" in message
    assert "check the username and password" in message
    for text in (result.message, repr(result), whole_chain(caught.value), repr(pool.settings)):
        assert wrong not in text
    assert repr(pool.settings).startswith("SmtpSettings(host=")
    assert login.messages == []


async def test_oauth2_token_login_sends(login: RecordingSMTPServer, make_pool: PoolFactory) -> None:
    pool = make_pool(login.port, username=SENDER, oauth2_token=TOKEN)

    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))

    assert result.outcome is SendOutcome.ACCEPTED
    assert login.logins == [("XOAUTH2", True)]


async def test_a_refreshed_oauth2_token_is_used_by_the_next_connection(
    login: RecordingSMTPServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("ya29.expired-token-value")

    def current() -> SmtpSettings:
        token = resolve_secret(None, str(token_file), what="test mailbox smtp")
        return settings_for(login.port, username=SENDER, oauth2_token=token)

    async with SmtpPool(current(), name=SENDER, reload=current) as pool:
        with pytest.raises(MailboxUnavailable):
            await pool.check()
        token_file.write_text(TOKEN)  # what an outside refresher does every hour
        assert "authenticated as" in await pool.check()
        result = await pool.send(
            SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example")
        )
        assert result.outcome is SendOutcome.ACCEPTED
        token_file.unlink()  # a refresher caught mid-write: the last token read is kept
        assert "authenticated as" in await pool.check()
    assert login.logins[:2] == [("XOAUTH2", False), ("XOAUTH2", True)]


async def test_expired_oauth2_token_is_mailbox_down_and_never_shown(
    login: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    expired = "ya29.expired-token-value"
    pool = make_pool(login.port, username=SENDER, oauth2_token=expired)

    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))
    with pytest.raises(MailboxUnavailable) as caught:
        await pool.check()

    assert result.outcome is SendOutcome.MAILBOX_DOWN
    assert "OAuth2 token" in result.message
    for text in (result.message, whole_chain(caught.value), repr(pool.settings)):
        assert expired not in text


async def test_sending_without_the_required_login_is_mailbox_down(
    login: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(login.port)

    result = await pool.send(SENDER, "ok-maria@acme.example", raw_message("ok-maria@acme.example"))

    # A refused sender is the mailbox's problem, never a bounce of the prospect.
    assert result.outcome is SendOutcome.MAILBOX_DOWN
    assert result.code == 530
    assert f"refused the sender <{SENDER}> at MAIL FROM" in result.message


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"username": SENDER}, "neither a password nor an OAuth2 token"),
        ({"password": PASSWORD}, "no username"),
        ({"pool_size": 0}, "pool_size must be at least 1"),
        ({"security": "ssl"}, "security 'ssl' is not one of"),
    ],
)
def test_settings_refuse_what_cannot_work(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as caught:
        settings_for(587, **overrides)

    assert PASSWORD not in str(caught.value)


async def test_closed_pool_refuses_to_send(
    server: RecordingSMTPServer, make_pool: PoolFactory
) -> None:
    pool = make_pool(server.port)
    await pool.send(SENDER, "ok-a@acme.example", raw_message("ok-a@acme.example"))
    await pool.close()

    with pytest.raises(RuntimeError, match="closed"):
        await pool.send(SENDER, "ok-b@acme.example", raw_message("ok-b@acme.example"))
