"""The IMAP module against a real Dovecot on loopback: logins, folders, lookups, APPEND."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator

import pytest
from servers.dovecot import HOST, DovecotServer, free_port

from sequencer.core.config import MailboxConfig
from sequencer.core.errors import ConfigError, MailboxUnavailable
from sequencer.core.mailbox_config import Security, ServerConfig
from sequencer.mail.imap import (
    ImapSettings,
    append_message,
    connect,
    decode_folder_name,
    encode_folder_name,
    find_message_id,
    imap_settings,
    list_folders,
    session,
)

MAILBOX = "ana.reyes@northwind.example"
TIMEOUT = 5.0


def message(message_id: str, subject: str = "Quick question", references: str = "") -> bytes:
    headers = [
        f"From: Ana Reyes <{MAILBOX}>",
        "To: Ben Ode <ben@acme.example>",
        f"Subject: {subject}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if references:
        headers += [f"In-Reply-To: {references}", f"References: {references}"]
    body = "Hi Ben,\n\nwould a short call next week help?\n\nAna\n"
    return ("\n".join(headers) + "\n\n" + body).encode()


@pytest.fixture
def settings(dovecot_server: DovecotServer, imap_user: tuple[str, str]) -> ImapSettings:
    user, password = imap_user
    port = dovecot_server.port
    assert port is not None
    return ImapSettings(HOST, port, Security.NONE, user, password, timeout=TIMEOUT)


def with_(settings: ImapSettings, **changes: object) -> ImapSettings:
    fields = {
        "host": settings.host,
        "port": settings.port,
        "security": settings.security,
        "username": settings.username,
        "password": settings.password,
        "oauth2_token": settings.oauth2_token,
        "timeout": settings.timeout,
        "validate_certs": settings.validate_certs,
    }
    fields.update(changes)
    return ImapSettings(**fields)  # type: ignore[arg-type]


# -- logging in ----------------------------------------------------------------------------


async def test_login_and_list_folders_of_a_new_mailbox(settings: ImapSettings) -> None:
    assert await list_folders(settings, name=MAILBOX) == ["INBOX"]


async def test_wrong_password_is_unavailable_and_never_shows_the_password(
    settings: ImapSettings,
) -> None:
    wrong = "Wr0ng-but-s3cret-passw0rd"
    with pytest.raises(MailboxUnavailable) as caught:
        await list_folders(with_(settings, password=wrong), name=MAILBOX)
    text = str(caught.value)
    assert text.startswith(f"{MAILBOX}: cannot log in to IMAP server {HOST}:{settings.port}")
    assert f"as {settings.username}" in text
    assert "AUTHENTICATIONFAILED" in text
    assert "check the username and password" in text
    assert wrong not in text
    assert settings.password is not None and settings.password not in text
    assert wrong not in repr(with_(settings, password=wrong))


async def test_unknown_user_is_refused_like_a_wrong_password(settings: ImapSettings) -> None:
    with pytest.raises(MailboxUnavailable, match=r"cannot log in .* as nobody-here"):
        await list_folders(with_(settings, username="nobody-here"), name=MAILBOX)


async def test_oauth2_login_and_a_refused_token(
    settings: ImapSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The test server takes the user's password as the XOAUTH2 token.
    oauth2 = with_(settings, password=None, oauth2_token=settings.password)
    assert await list_folders(oauth2, name=MAILBOX) == ["INBOX"]

    expired = "ya29.a0AfH6SMBx-expired-access-token"
    started = asyncio.get_running_loop().time()
    with pytest.raises(MailboxUnavailable) as caught:
        await list_folders(with_(oauth2, oauth2_token=expired), name=MAILBOX)
    # The server's error challenge was answered, so the refusal came at once, not by timeout.
    assert asyncio.get_running_loop().time() - started < TIMEOUT / 2
    text = str(caught.value)
    assert "AUTHENTICATIONFAILED" in text and "(OAuth2 status 401)" in text
    assert "check the OAuth2 token" in text
    for token in (expired, settings.password):
        assert token is not None
        assert token not in text
        assert token not in caplog.text
        assert base64.b64encode(token.encode()).decode()[:16] not in caplog.text
    sasl = f"user={settings.username}\x01auth=Bearer {expired}\x01\x01"
    assert base64.b64encode(sasl.encode()).decode() not in caplog.text


async def test_implicit_tls(dovecot_server: DovecotServer, settings: ImapSettings) -> None:
    tls = with_(settings, port=dovecot_server.tls_port, security=Security.TLS)
    assert await list_folders(with_(tls, validate_certs=False), name=MAILBOX) == ["INBOX"]
    # The test server's certificate is self-signed: checked certificates refuse it.
    with pytest.raises(MailboxUnavailable, match="certificate is not trusted"):
        await list_folders(tls, name=MAILBOX)


async def test_starttls(settings: ImapSettings) -> None:
    upgraded = with_(settings, security=Security.STARTTLS, validate_certs=False)
    imap = await connect(upgraded, name=MAILBOX)
    try:
        # Only TLS connections carry this; the plain port alone would not.
        assert imap.protocol.transport.get_extra_info("ssl_object") is not None
    finally:
        imap.protocol.transport.abort()
    assert await list_folders(upgraded, name=MAILBOX) == ["INBOX"]


async def test_nothing_listening_is_unavailable_naming_host_and_port() -> None:
    port = free_port()
    settings = ImapSettings(HOST, port, Security.NONE, "ana", "pw", timeout=TIMEOUT)
    with pytest.raises(MailboxUnavailable) as caught:
        await list_folders(settings, name=MAILBOX)
    assert str(caught.value).startswith(f"{MAILBOX}: cannot connect to IMAP server {HOST}:{port}")
    assert "connection refused" in str(caught.value)


async def test_a_server_that_never_greets_times_out() -> None:
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # says nothing until the client gives up
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    server = await asyncio.start_server(silent, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    settings = ImapSettings(HOST, port, Security.NONE, "ana", "pw", timeout=0.3)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(MailboxUnavailable, match=r"no answer within 0.3 s"):
            await list_folders(settings, name=MAILBOX)
        assert asyncio.get_running_loop().time() - started < 2
        # The client closed its end instead of leaving the connection open.
        await asyncio.wait_for(hung_up.wait(), 2)
    finally:
        server.close()
        await server.wait_closed()


# -- finding and saving messages -----------------------------------------------------------


async def test_append_then_find_message_id(
    dovecot_server: DovecotServer, settings: ImapSettings
) -> None:
    dovecot_server.create_folder(settings.username, "Sent")
    sent_id = "<s12.intro.k3j4h5@northwind.example>"
    await append_message(settings, "Sent", message(sent_id), name=MAILBOX)

    assert await find_message_id(settings, "Sent", sent_id, name=MAILBOX)
    # Brackets are optional, as Message-IDs are often stored without them.
    assert await find_message_id(settings, "Sent", sent_id[1:-1], name=MAILBOX)
    assert not await find_message_id(settings, "Sent", "<s12.bump.k3j4h5@x.example>", name=MAILBOX)
    assert not await find_message_id(settings, "INBOX", sent_id, name=MAILBOX)
    # A copy in Sent is marked read, like the ones mail clients keep.
    assert [flags for flags in dovecot_server.flags(settings.username, "Sent").values()] == [
        {"\\Seen", "\\Recent"}
    ]


async def test_append_with_no_flags_leaves_it_unread(
    dovecot_server: DovecotServer, settings: ImapSettings
) -> None:
    await append_message(settings, "INBOX", message("<a1@x.example>"), name=MAILBOX, flags="")
    (flags,) = dovecot_server.flags(settings.username).values()
    assert "\\Seen" not in flags


async def test_append_keeps_the_message_bytes(
    dovecot_server: DovecotServer, settings: ImapSettings
) -> None:
    original = message("<bytes@x.example>", subject="Grüße aus Köln")
    async with session(settings, name=MAILBOX) as imap:
        uid = await imap.append("INBOX", original)
        assert uid == 1  # Dovecot reports APPENDUID
        await imap.examine("INBOX")
        response = await imap.client.protocol.fetch("1", "(BODY.PEEK[])", by_uid=True)
    stored = bytes(next(line for line in response.lines if isinstance(line, bytearray)))
    assert stored == original.replace(b"\n", b"\r\n")


async def test_a_reply_quoting_the_id_is_not_the_message(
    dovecot_server: DovecotServer, settings: ImapSettings
) -> None:
    ours = "<s7.intro.aa11@northwind.example>"
    dovecot_server.deliver(
        settings.username, message("<reply-1@acme.example>", "Re: Quick question", ours)
    )
    assert not await find_message_id(settings, "INBOX", ours, name=MAILBOX)
    assert await find_message_id(settings, "INBOX", "<reply-1@acme.example>", name=MAILBOX)


async def test_looking_up_leaves_flags_unchanged(
    dovecot_server: DovecotServer, settings: ImapSettings
) -> None:
    user = settings.username
    dovecot_server.deliver(user, message("<unread-1@acme.example>"))
    dovecot_server.deliver(user, message("<unread-2@acme.example>"))
    before = dovecot_server.flags(user)
    assert all("\\Seen" not in flags for flags in before.values())

    assert await find_message_id(settings, "INBOX", "<unread-2@acme.example>", name=MAILBOX)
    assert await list_folders(settings, name=MAILBOX) == ["INBOX"]

    assert dovecot_server.flags(user) == before
    async with session(settings, name=MAILBOX) as imap:
        state = await imap.examine("INBOX")
    assert (state.exists, state.uidnext) == (2, 3)
    assert state.uidvalidity is not None


async def test_missing_folder_is_unavailable_and_lists_the_folders(
    dovecot_server: DovecotServer, settings: ImapSettings
) -> None:
    dovecot_server.create_folder(settings.username, "Sent Items")
    with pytest.raises(MailboxUnavailable) as caught:
        await find_message_id(settings, "Sent", "<a@x.example>", name=MAILBOX)
    assert str(caught.value) == (
        f"{MAILBOX}: {HOST}:{settings.port} has no folder 'Sent' (it has: Sent Items, INBOX); "
        "check the folder name in sequencer.yaml (e.g. sent_folder)"
    )
    with pytest.raises(MailboxUnavailable, match="has no folder 'Sent' "):
        await append_message(settings, "Sent", message("<a@x.example>"), name=MAILBOX)
    # Never created behind the user's back.
    assert "Sent" not in dovecot_server.folders(settings.username)


async def test_folder_names_beyond_ascii(
    dovecot_server: DovecotServer, settings: ImapSettings
) -> None:
    for folder in ("Entwürfe", "Sent & Co", "送信済み"):
        dovecot_server.create_folder(settings.username, folder)
    assert sorted(await list_folders(settings, name=MAILBOX)) == sorted(
        ["INBOX", "Entwürfe", "Sent & Co", "送信済み"]
    )
    await append_message(settings, "送信済み", message("<jp@x.example>"), name=MAILBOX)
    assert await find_message_id(settings, "送信済み", "<jp@x.example>", name=MAILBOX)
    assert not await find_message_id(settings, "Entwürfe", "<jp@x.example>", name=MAILBOX)


@pytest.mark.parametrize(
    ("name", "wire"),
    [("INBOX", "INBOX"), ("Entwürfe", "Entw&APw-rfe"), ("A&B", "A&-B"), ("~peter/日本語", None)],
)
def test_modified_utf7_folder_names(name: str, wire: str | None) -> None:
    encoded = encode_folder_name(name)
    assert encoded.isascii()
    if wire is not None:
        assert encoded == wire
    assert decode_folder_name(encoded) == name


@pytest.mark.parametrize(
    "bad",
    [
        '<a"b@x.example>',
        "<a@x.example>\r\nX-Injected: 1",
        "<a@x.example> OR ALL",
        "<a\\b@x.example>",
        "no-at-sign",
        "<ä@x.example>",
        "",
    ],
)
async def test_unsafe_message_ids_are_refused_before_connecting(bad: str) -> None:
    # Port 9 (discard) on loopback: a connection attempt would fail differently.
    settings = ImapSettings(HOST, 9, Security.NONE, "ana", "pw", timeout=TIMEOUT)
    with pytest.raises(ValueError, match="not a Message-ID"):
        await find_message_id(settings, "INBOX", bad, name=MAILBOX)


# -- restarts ------------------------------------------------------------------------------


@pytest.fixture
async def delivered(
    dovecot_server: DovecotServer, settings: ImapSettings
) -> AsyncIterator[ImapSettings]:
    dovecot_server.deliver(settings.username, message("<kept@acme.example>"))
    yield settings


@pytest.mark.parametrize("crash", [False, True], ids=["shutdown", "crash"])
async def test_server_restart_between_calls(
    dovecot_server: DovecotServer, delivered: ImapSettings, crash: bool
) -> None:
    settings = delivered
    assert await find_message_id(settings, "INBOX", "<kept@acme.example>", name=MAILBOX)
    dovecot_server.restart(crash=crash)
    # Each call opens a new connection: the restart is invisible, users and mail survive.
    assert await find_message_id(settings, "INBOX", "<kept@acme.example>", name=MAILBOX)


@pytest.mark.parametrize("crash", [False, True], ids=["shutdown", "crash"])
async def test_a_session_cut_by_a_restart_fails_fast_and_a_new_one_works(
    dovecot_server: DovecotServer, delivered: ImapSettings, crash: bool
) -> None:
    settings = delivered
    async with session(settings, name=MAILBOX) as imap:
        await imap.examine("INBOX")
        dovecot_server.restart(crash=crash)
        started = asyncio.get_running_loop().time()
        with pytest.raises(MailboxUnavailable, match="connection was lost") as caught:
            await imap.has_message_id("<kept@acme.example>")
        # Noticed when the connection drops, not after the command timeout.
        assert asyncio.get_running_loop().time() - started < TIMEOUT / 2
        assert str(caught.value).startswith(f"{MAILBOX}: ")
        if not crash:
            assert "Server shutting down" in str(caught.value)
        with pytest.raises(MailboxUnavailable, match="connection was lost"):
            await imap.list_folders()
    async with session(settings, name=MAILBOX) as imap:
        await imap.examine("INBOX")
        assert await imap.has_message_id("<kept@acme.example>")


# -- settings from sequencer.yaml ----------------------------------------------------------


def box_with(imap: ServerConfig | None) -> MailboxConfig:
    return MailboxConfig(address=MAILBOX, imap=imap)


def test_imap_settings_resolve_the_secret_from_the_environment() -> None:
    server = ServerConfig(
        host="imap.example.com",
        port=993,
        security=Security.TLS,
        username=MAILBOX,
        password_env="IMAP_PASSWORD_ANA",
        timeout=12.0,
    )
    settings = imap_settings(box_with(server), env={"IMAP_PASSWORD_ANA": "s3cret-pw"})
    assert settings == ImapSettings(
        "imap.example.com", 993, Security.TLS, MAILBOX, "s3cret-pw", None, 12.0
    )
    assert "s3cret-pw" not in repr(settings)


def test_imap_settings_prefer_the_oauth2_token(tmp_path: pytest.TempPathFactory) -> None:
    server = ServerConfig(
        host="imap.gmail.com",
        port=993,
        security=Security.TLS,
        username=MAILBOX,
        password_env="IMAP_PASSWORD_ANA",
        oauth2_token_env="IMAP_TOKEN_ANA",
    )
    settings = imap_settings(box_with(server), env={"IMAP_TOKEN_ANA": "ya29.token"})
    assert (settings.oauth2_token, settings.password) == ("ya29.token", None)


def test_imap_settings_need_an_imap_block_and_a_secret() -> None:
    with pytest.raises(ConfigError, match=f"mailbox {MAILBOX} has no `imap:` settings"):
        imap_settings(box_with(None))
    server = ServerConfig(host="imap.example.com", port=993, security=Security.TLS, username="a")
    with pytest.raises(ConfigError, match="IMAP needs a login; set password_env"):
        imap_settings(box_with(server), env={})
    missing = ServerConfig(
        host="imap.example.com",
        port=993,
        security=Security.TLS,
        username="a",
        password_env="NOT_SET_ANYWHERE",
    )
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        imap_settings(box_with(missing), env={})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"host": "imap example.com"}, "is not a host name"),
        ({"port": 0}, "between 1 and 65535"),
        ({"timeout": 0}, "more than 0 seconds"),
        ({"username": ""}, "set the username"),
        ({"password": None}, "IMAP needs a login"),
        ({"password": "pw\r\nA1 DELETE INBOX"}, "line break"),
        ({"security": "ssl"}, "is not one of"),
    ],
)
def test_imap_settings_are_checked(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "host": "imap.example.com",
        "port": 993,
        "security": Security.TLS,
        "username": MAILBOX,
        "password": "pw",
    }
    fields.update(changes)
    with pytest.raises(ConfigError, match=message) as caught:
        ImapSettings(**fields)  # type: ignore[arg-type]
    assert "DELETE INBOX" not in str(caught.value)
