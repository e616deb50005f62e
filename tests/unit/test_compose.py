"""Tests for the outgoing message: Message-IDs, Thread-Index, headers, MIME and injection."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage, MIMEPart
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequencer.mail.compose import (
    OutgoingEmail,
    address_domain,
    build_message,
    clean_header_text,
    message_bytes,
    message_id,
    parse_message_id,
    reply_subject,
    thread_index,
)

SECRET = b"message-id-secret-for-tests"
ROOT_DATE = datetime(2026, 5, 5, 9, 12, 30, tzinfo=timezone(timedelta(hours=2)))
ROOT_ID = message_id(SECRET, 42, "intro", "northwind.example")
UNSUBSCRIBE_URL = "https://go.northwind.example/u/AXN0ZXN0"
UNSUBSCRIBE_MAILTO = "mailto:ana@northwind.example?subject=unsubscribe"
BASE = OutgoingEmail(
    from_address="ana@northwind.example",
    from_name="Ana Lopez",
    to_address="jose@acme.example",
    to_name="Jose Muller",
    subject="Quick question",
    text="Hi Jose,\n\nworth a chat?\n",
    html=None,
    message_id=ROOT_ID,
    date=ROOT_DATE,
)
CORE_HEADERS = [
    "From", "To", "Subject", "Date", "Message-ID",
    "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
]  # fmt: skip


def roundtrip(outgoing: OutgoingEmail) -> EmailMessage:
    raw = message_bytes(build_message(outgoing))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def content(part: MIMEPart) -> str:
    # Parsed from CRLF bytes, 7bit bodies keep their CRLFs.
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def fields(name: str, value: object) -> dict[str, Any]:
    return {name: value}


def header_lines(raw: bytes) -> list[str]:
    return raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")


# --- Message-ID -------------------------------------------------------------------------------


def test_message_id_shape_and_determinism() -> None:
    value = message_id(SECRET, 42, "intro", "NorthWind.Example")
    tag = re.fullmatch(r"<s42\.intro\.([0-9a-f]{10})@northwind\.example>", value)
    assert tag is not None
    assert value == message_id(SECRET, 42, "intro", "northwind.example")
    assert message_id(SECRET, 42, "bump-2", "northwind.example") != value
    assert message_id(SECRET, 43, "intro", "northwind.example") != value
    assert message_id(b"other", 42, "intro", "northwind.example") != value


@pytest.mark.parametrize(
    "value", [ROOT_ID, ROOT_ID[1:-1], f"  {ROOT_ID}\r\n", f"\t{ROOT_ID[1:-1]} "]
)
def test_parse_message_id_accepts_our_ids(value: str) -> None:
    assert parse_message_id(SECRET, value) == (42, "intro")


def test_parse_message_id_accepts_another_domain() -> None:
    # The tag covers enrollment and step; the domain may change with the sending mailbox.
    moved = ROOT_ID.replace("northwind.example", "mail.other.example")
    assert parse_message_id(SECRET, moved) == (42, "intro")


def test_parse_message_id_rejects_forgeries() -> None:
    tag = ROOT_ID.split(".")[2].split("@")[0]
    for forged in (
        ROOT_ID.replace("s42.", "s43."),
        ROOT_ID.replace(".intro.", ".bump."),
        ROOT_ID.replace("s42.", "s042."),
        ROOT_ID.replace(tag, tag[:-1] + ("0" if tag[-1] != "0" else "1")),
        ROOT_ID.replace(tag, tag.upper()),
        ROOT_ID[:-1],
        ROOT_ID + ">",
        "<" + ROOT_ID + ">",
        ROOT_ID.replace("@", "@@"),
        "",
        "<>",
        "<CAF=abc+def@mail.gmail.com>",
        "<s" + "9" * 5000 + ".intro.0123456789@x>",
    ):
        assert parse_message_id(SECRET, forged) is None, forged
    assert parse_message_id(b"other", ROOT_ID) is None


@given(st.text(max_size=200))
def test_parse_message_id_never_raises_on_garbage(value: str) -> None:
    assert parse_message_id(SECRET, value) is None


@given(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.from_regex(r"[a-z0-9_-]{1,30}", fullmatch=True),
)
def test_message_id_round_trips(enrollment_id: int, step_id: str) -> None:
    value = message_id(SECRET, enrollment_id, step_id, "mail.example")
    assert parse_message_id(SECRET, value) == (enrollment_id, step_id)


@pytest.mark.parametrize(
    ("enrollment_id", "step_id", "domain", "field"),
    [
        (-1, "intro", "x.example", "enrollment_id"),
        (1, "Intro", "x.example", "step_id"),
        (1, "a.b", "x.example", "step_id"),
        (1, "", "x.example", "step_id"),
        (1, "intro", "", "domain"),
        (1, "intro", "x example", "domain"),
        (1, "intro", "x.example>\r\nBcc: y", "domain"),
        (1, "intro", "müller.example", "domain"),
    ],
)
def test_message_id_refuses_bad_parts(
    enrollment_id: int, step_id: str, domain: str, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        message_id(SECRET, enrollment_id, step_id, domain)


# --- Thread-Index -----------------------------------------------------------------------------


def test_thread_index_header_is_filetime_and_guid() -> None:
    root = datetime(2026, 5, 5, 7, 12, 30, 123456, tzinfo=UTC)
    filetime = (int(root.timestamp()) + 11_644_473_600) * 10_000_000 + 123456 * 10
    raw = base64.b64decode(thread_index(ROOT_ID, root, 0))
    assert raw[:6] == (filetime >> 16).to_bytes(6, "big")
    assert raw[0] == 0x01  # what Outlook expects in the first byte
    assert raw[6:22] == hashlib.sha256(ROOT_ID.encode()).digest()[:16]
    assert len(raw) == 22


def test_thread_index_grows_by_five_bytes_and_keeps_its_header() -> None:
    values = [base64.b64decode(thread_index(ROOT_ID, ROOT_DATE, n)) for n in range(6)]
    assert [len(v) for v in values] == [22 + 5 * n for n in range(6)]
    assert len({v[:22] for v in values}) == 1
    for shorter, longer in itertools.pairwise(values):
        assert longer.startswith(shorter)  # each reply appends one block to its parent's index
    assert thread_index(ROOT_ID, ROOT_DATE, 3) == thread_index(ROOT_ID, ROOT_DATE, 3)


def test_thread_index_child_blocks_follow_the_layout() -> None:
    raw = base64.b64decode(thread_index(ROOT_ID, ROOT_DATE, 3))
    day = 86_400 * 10_000_000
    for n in (1, 2, 3):
        block = int.from_bytes(raw[22 + 5 * (n - 1) : 22 + 5 * n], "big")
        assert block >> 39 == 0  # DeltaCode 0: less than 1.7 years
        assert (block >> 8) & 0x7FFF_FFFF == (n * day) >> 18


def test_thread_index_switches_delta_code_after_1_7_years() -> None:
    raw = base64.b64decode(thread_index(ROOT_ID, ROOT_DATE, 700))
    block = int.from_bytes(raw[-5:], "big")
    assert block >> 39 == 1
    assert (block >> 8) & 0x7FFF_FFFF == (700 * 86_400 * 10_000_000) >> 23


def test_thread_index_differs_between_threads() -> None:
    other = message_id(SECRET, 43, "intro", "northwind.example")
    assert thread_index(ROOT_ID, ROOT_DATE, 0) != thread_index(other, ROOT_DATE, 0)
    later = ROOT_DATE + timedelta(days=1)
    assert thread_index(ROOT_ID, ROOT_DATE, 0) != thread_index(ROOT_ID, later, 0)


def test_thread_index_refuses_naive_dates_and_negative_replies() -> None:
    with pytest.raises(ValueError, match="root_date"):
        thread_index(ROOT_ID, datetime(2026, 5, 5, 9, 12), 0)
    with pytest.raises(ValueError, match="replies"):
        thread_index(ROOT_ID, ROOT_DATE, -1)
    with pytest.raises(ValueError, match="replies"):
        thread_index(ROOT_ID, ROOT_DATE, 10**9)


# --- headers ----------------------------------------------------------------------------------


def test_plain_message_has_exactly_the_expected_headers() -> None:
    raw = message_bytes(build_message(BASE))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert sorted(parsed.keys()) == sorted(CORE_HEADERS)
    assert str(parsed["From"]) == "Ana Lopez <ana@northwind.example>"
    assert str(parsed["To"]) == "Jose Muller <jose@acme.example>"
    assert str(parsed["Subject"]) == "Quick question"
    assert parsed["Date"].datetime == ROOT_DATE
    assert str(parsed["Message-ID"]) == ROOT_ID
    assert str(parsed["MIME-Version"]) == "1.0"
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert content(parsed) == BASE.text


def test_one_to_one_mail_has_no_bulk_headers() -> None:
    full = replace(BASE, unsubscribe_url=UNSUBSCRIBE_URL, unsubscribe_mailto=UNSUBSCRIBE_MAILTO)
    parsed = roundtrip(full)
    for name in ("Auto-Submitted", "Precedence", "X-Auto-Response-Suppress", "Bcc", "Cc"):
        assert name not in parsed


def test_bytes_are_crlf_seven_bit_and_within_line_limits() -> None:
    outgoing = replace(
        BASE,
        subject="Grüße aus München 🎉 " * 8,
        text="Olá José, " * 40 + "\n",
        html="<p>Olá</p>",
        thread_index=thread_index(ROOT_ID, ROOT_DATE, 12),
        unsubscribe_url="https://go.northwind.example/u/" + "A" * 150,
        unsubscribe_mailto=UNSUBSCRIBE_MAILTO,
    )
    message = build_message(outgoing)
    raw = message_bytes(message)
    assert raw == message.as_bytes()  # the message's own policy serialises the same way
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_long_machine_headers_are_never_encoded_words() -> None:
    index = thread_index(ROOT_ID, ROOT_DATE, 12)
    url = "https://go.northwind.example/u/" + "A" * 150
    raw = message_bytes(build_message(replace(BASE, thread_index=index, unsubscribe_url=url)))
    lines = header_lines(raw)
    assert f"Thread-Index: {index}" in lines
    assert f"List-Unsubscribe: <{url}>" in lines


def test_three_message_thread() -> None:
    ids = [message_id(SECRET, 42, step, "northwind.example") for step in ("intro", "bump", "last")]
    dates = [ROOT_DATE + timedelta(days=3 * n) for n in range(3)]
    messages = []
    for n in range(3):
        outgoing = replace(
            BASE,
            subject=BASE.subject if n == 0 else reply_subject(BASE.subject),
            message_id=ids[n],
            date=dates[n],
            in_reply_to=ids[n - 1] if n else None,
            references=tuple(ids[:n]),
            thread_topic=BASE.subject,
            thread_index=thread_index(ids[0], dates[0], n),
        )
        messages.append(roundtrip(outgoing))
    first, second, third = messages
    assert "In-Reply-To" not in first and "References" not in first
    assert str(second["In-Reply-To"]) == ids[0]
    assert str(second["References"]) == ids[0]
    assert str(third["In-Reply-To"]) == ids[1]
    assert str(third["References"]).split() == ids[:2]
    assert [str(m["Subject"]) for m in messages] == ["Quick question", *["Re: Quick question"] * 2]
    assert {str(m["Thread-Topic"]) for m in messages} == {"Quick question"}
    indexes = [base64.b64decode(str(m["Thread-Index"])) for m in messages]
    assert [len(i) for i in indexes] == [22, 27, 32]
    assert len({i[:22] for i in indexes}) == 1  # Outlook groups the thread by these bytes
    assert sorted(third.keys()) == sorted(
        [*CORE_HEADERS, "In-Reply-To", "References", "Thread-Topic", "Thread-Index"]
    )


def test_html_makes_multipart_alternative_text_first() -> None:
    parsed = roundtrip(replace(BASE, html="<p>Hi José, <b>worth a chat?</b></p>"))
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert all("MIME-Version" not in p for p in parts)
    assert content(parts[0]) == BASE.text
    assert content(parts[1]) == "<p>Hi José, <b>worth a chat?</b></p>\n"
    assert sorted(parsed.keys()) == sorted(
        name for name in CORE_HEADERS if name != "Content-Transfer-Encoding"
    )


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("José Müller", "Grüße, José"),
        ("王小明", "关于合作的问题"),
        ("Zoë 🎉 Ångström", "🎉 Congrats on the launch 🚀"),
        ('Lopez, Ana "AL" (Sales)', "50% off? =?not-an-encoded-word?="),
        ("O'Brien", "Re: äöü"),
    ],
)
def test_utf8_names_and_subjects_round_trip_exactly(name: str, subject: str) -> None:
    parsed = roundtrip(replace(BASE, from_name=name, to_name=name, subject=subject))
    assert parsed["From"].addresses[0].display_name == name
    assert parsed["To"].addresses[0].display_name == name
    assert str(parsed["Subject"]) == subject


def test_plain_ascii_headers_are_not_encoded() -> None:
    # Needlessly encoded ASCII headers are a spam signal.
    lines = header_lines(message_bytes(build_message(BASE)))
    assert "Subject: Quick question" in lines
    assert "From: Ana Lopez <ana@northwind.example>" in lines


def test_missing_to_name_gives_a_bare_address() -> None:
    for to_name in (None, "", " \r\n "):
        parsed = roundtrip(replace(BASE, to_name=to_name))
        assert str(parsed["To"]) == "jose@acme.example"


# --- unsubscribe headers ----------------------------------------------------------------------


def test_https_and_mailto_unsubscribe() -> None:
    parsed = roundtrip(
        replace(BASE, unsubscribe_url=UNSUBSCRIBE_URL, unsubscribe_mailto=UNSUBSCRIBE_MAILTO)
    )
    assert str(parsed["List-Unsubscribe"]) == f"<{UNSUBSCRIBE_URL}>, <{UNSUBSCRIBE_MAILTO}>"
    assert str(parsed["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"


def test_mailto_only_has_no_one_click_post() -> None:
    parsed = roundtrip(replace(BASE, unsubscribe_mailto=UNSUBSCRIBE_MAILTO))
    assert str(parsed["List-Unsubscribe"]) == f"<{UNSUBSCRIBE_MAILTO}>"
    assert "List-Unsubscribe-Post" not in parsed


def test_plain_http_url_has_no_one_click_post() -> None:
    url = "http://localhost:8000/u/AXN0ZXN0"
    parsed = roundtrip(replace(BASE, unsubscribe_url=url))
    assert str(parsed["List-Unsubscribe"]) == f"<{url}>"
    assert "List-Unsubscribe-Post" not in parsed


def test_no_unsubscribe_means_neither_header() -> None:
    parsed = roundtrip(BASE)
    assert "List-Unsubscribe" not in parsed and "List-Unsubscribe-Post" not in parsed


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unsubscribe_url", "https://x.example/u/a b"),
        ("unsubscribe_url", "https://x.example/u/a>, <https://evil.example"),
        ("unsubscribe_url", "https://x.example/u/a\r\nBcc: y@z.example"),
        ("unsubscribe_url", "javascript:alert(1)"),
        ("unsubscribe_mailto", "ana@northwind.example"),
        ("unsubscribe_mailto", "mailto:ana@northwind.example\nBcc: y@z.example"),
    ],
)
def test_malformed_unsubscribe_targets_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        build_message(replace(BASE, **fields(field, value)))


# --- validation -------------------------------------------------------------------------------

BAD_ADDRESSES = [
    "",
    "jose",
    "jose@@acme.example",
    "jose@acme@example",
    "jo se@acme.example",
    "jose@acme.example\r\nBcc: evil@x.example",
    "jose@acme.example\x00",
    "jose@acme.example\u2028",
    "<jose@acme.example>",
    "Jose <jose@acme.example>",
    "jose@acme.example,evil@x.example",
    "jösé@acme.example",
    "=?utf-8?q?a=40b?=@acme.example",
    ".jose@acme.example",
    "jose@-acme.example",
    "jose@acme..example",
    "a" * 250 + "@acme.example",
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
@pytest.mark.parametrize("field", ["from_address", "to_address"])
def test_invalid_addresses_are_refused_naming_the_field(field: str, address: str) -> None:
    with pytest.raises(ValueError, match=field):
        build_message(replace(BASE, **fields(field, address)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_id", "s1.intro.abc@x.example"),
        ("message_id", "<a@b>\r\nBcc: <evil@x.example>"),
        ("in_reply_to", "<a b@x.example>"),
        ("references", ("<a@x.example>", "<oops>")),
        ("thread_index", "not base64!"),
        ("thread_index", "AQ==\r\nBcc: evil@x.example"),
    ],
)
def test_malformed_machine_headers_are_refused(field: str, value: str | tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=field.split("[")[0]):
        build_message(replace(BASE, **fields(field, value)))


def test_naive_date_is_refused() -> None:
    with pytest.raises(ValueError, match="date"):
        build_message(replace(BASE, date=datetime(2026, 5, 5, 9, 0)))


# --- header injection -------------------------------------------------------------------------

NASTY_PIECES = [
    "\r\n", "\n", "\r", "\x00", "\t", "\x0b", "\x1f", "\x7f", "\x85", "\u2028", "\u2029",
    "Bcc: evil@x.example", "\r\nBcc: evil@x.example", "To: other@x.example",
    "=?utf-8?q?x=0D=0ABcc:_evil@x?=", "=?utf-8?b?DQpCY2M6IGV2aWxAeC5leGFtcGxl?=",
    "=?", "?=", " ", '"', "\\", "<", ">", ",", "@", ":", ";", "(", ")",
    "José", "🎉", "王", "a", "Re:",
]  # fmt: skip
nasty_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(NASTY_PIECES), max_size=12).map("".join),
    st.lists(st.one_of(st.sampled_from(NASTY_PIECES), st.text(max_size=5)), max_size=8).map(
        "".join
    ),
)
KNOWN_HEADERS = {*CORE_HEADERS, "Thread-Topic"}


@pytest.mark.parametrize(
    "trick", ["=?utf-8?q?x=0D=0ABcc:_evil@x?=", "=?utf-8?b?DQpCY2M6IGV2aWxAeC5leGFtcGxl?="]
)
def test_encoded_word_tricks_arrive_as_literal_text(trick: str) -> None:
    outgoing = replace(BASE, from_name=trick, to_name=trick, subject=trick, thread_topic=trick)
    raw = message_bytes(build_message(outgoing))
    assert not any(line.startswith("Bcc") for line in header_lines(raw))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert sorted(parsed.keys()) == sorted(KNOWN_HEADERS)
    assert str(parsed["Subject"]) == trick
    assert str(parsed["Thread-Topic"]) == trick
    assert parsed["From"].addresses[0].display_name == trick
    assert parsed["To"].addresses[0].display_name == trick
    assert [a.addr_spec for a in parsed["To"].addresses] == ["jose@acme.example"]


@given(from_name=nasty_text, to_name=nasty_text, subject=nasty_text, thread_topic=nasty_text)
def test_no_header_can_be_injected(
    from_name: str, to_name: str, subject: str, thread_topic: str
) -> None:
    outgoing = replace(
        BASE, from_name=from_name, to_name=to_name, subject=subject, thread_topic=thread_topic
    )
    raw = message_bytes(build_message(outgoing))
    # On the wire: every header line is a known header or a continuation of one.
    for line in header_lines(raw):
        assert line.startswith((" ", "\t")) or line.split(":", 1)[0] in KNOWN_HEADERS, line
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert sorted(parsed.keys()) == sorted(KNOWN_HEADERS)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["jose@acme.example"]
    assert [a.addr_spec for a in parsed["From"].addresses] == ["ana@northwind.example"]
    assert str(parsed["Subject"]) == clean_header_text(subject)
    assert str(parsed["Thread-Topic"]) == clean_header_text(thread_topic)
    # Python's parser puts a space between adjacent encoded words in a name (RFC 2047 says
    # to join them), so long names are compared without whitespace.
    for header, name in (("From", from_name), ("To", to_name)):
        display = parsed[header].addresses[0].display_name
        assert "".join(display.split()) == "".join(clean_header_text(name).split())
    assert content(parsed) == BASE.text


# --- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Quick question", "Re: Quick question"),
        ("Re: Quick question", "Re: Quick question"),
        ("RE: Quick question", "RE: Quick question"),
        ("re:Quick question", "re:Quick question"),
        ("Re : Quick question", "Re : Quick question"),
        ("Re[2]: Quick question", "Re[2]: Quick question"),
        ("  Quick question ", "Re: Quick question"),
        ("Regarding our call", "Re: Regarding our call"),
        ("Fwd: deck", "Re: Fwd: deck"),
        ("", "Re:"),
    ],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


def test_address_domain() -> None:
    assert address_domain("Ana@NorthWind.Example") == "northwind.example"
    with pytest.raises(ValueError, match="address"):
        address_domain("not an address")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Hello\r\nBcc: x@y", "Hello Bcc: x@y"),
        ("a\x00b\u2028c\u2029d\x85e\tf", "a b c d e f"),
        ("  spaced   out  ", "spaced out"),
        ("José 🎉", "José 🎉"),
        ("\r\n", ""),
    ],
)
def test_clean_header_text(value: str, expected: str) -> None:
    assert clean_header_text(value) == expected
