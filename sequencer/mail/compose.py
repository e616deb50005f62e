"""The outgoing message: sender-safe headers, threading headers and the MIME body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

#: What a step id may contain; it becomes part of the Message-ID.
STEP_ID_PATTERN = re.compile(r"[a-z0-9_-]+")

# Cc holds C0, DEL and C1 (NEL U+0085 among them), Zl/Zp the Unicode line and paragraph
# separators, Cs lone surrogates. Together they are every character str.splitlines() breaks
# on, so no cleaned value can start a new header line anywhere in the email package.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ATOM = re.compile(rf"{_ATEXT}+")
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM.pattern}@{_DOT_ATOM.pattern}>")
_OUR_MESSAGE_ID = re.compile(r"s(0|[1-9][0-9]{0,18})\.([a-z0-9_-]+)\.([0-9a-f]{10})@([!-;=?A-~]+)")
_URL_TEXT = r"[!-+\--;=?-~]+"  # printable ASCII without '<', '>' and ','
_HTTP_URL = re.compile(rf"https?://{_URL_TEXT}", re.IGNORECASE)
_MAILTO_URL = re.compile(rf"mailto:{_URL_TEXT}", re.IGNORECASE)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_REPLY_PREFIX = re.compile(r"\s*re\s*(?:\[\d+\]\s*)?:", re.IGNORECASE)

_MAX_ADDRESS = 254  # RFC 5321 path limit minus the angle brackets
_FOLD_AT = 78  # RFC 5322 recommended line length
_MAX_LINE = 998  # RFC 5322 hard line limit
_MAX_ENCODED_WORD = 75  # RFC 2047
_MAX_PLAIN_WORD = 70  # longer text is encoded, since encoded words can be split across lines
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")

# Outlook's conversation index (MS-OXOMSG 2.2.1.3, ScCreateConversationIndex):
#   header, 22 bytes: the 6 most significant bytes of the root's FILETIME (100 ns intervals
#     since 1601-01-01 UTC), big-endian, i.e. FILETIME >> 16, whose first byte is 0x01 from
#     1829 to 2057; then a 16-byte GUID naming the conversation. (MS-OXOMSG describes a
#     reserved 0x01 byte followed by FILETIME bits 63..24 instead; both forms are in use, and
#     threading only needs the 22 bytes to be equal across the thread.)
#   one 5-byte child block per reply, 40 bits big-endian:
#     bit 39       DeltaCode: 0 when the time delta is below 2**49, else 1
#     bits 38..8   TimeDelta: delta bits 48..18 (DeltaCode 0) or 53..23 (DeltaCode 1)
#     bits 7..4    Random, bits 3..0 sequence count
#   where delta = reply time - header time, in FILETIME units.
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_FILETIME_DAY = 86_400 * 10_000_000
_MAX_REPLIES = ((1 << 54) - 1) // _FILETIME_DAY  # the largest delta DeltaCode 1 can hold


@dataclass(frozen=True)
class OutgoingEmail:
    """Everything one outgoing email says; ``build_message`` turns it into a MIME message."""

    from_address: str
    from_name: str
    to_address: str
    to_name: str | None
    subject: str
    text: str
    html: str | None
    message_id: str
    date: datetime  # aware
    in_reply_to: str | None = None  # the previous message in the thread
    references: tuple[str, ...] = ()  # all earlier message ids of the thread, oldest first
    thread_topic: str | None = None  # the thread's original subject (no "Re:")
    thread_index: str | None = None
    unsubscribe_url: str | None = None  # HTTPS one-click URL
    unsubscribe_mailto: str | None = None  # e.g. "mailto:ana@northwind.example?subject=unsubscribe"


# -- Message-ID and Thread-Index --------------------------------------------------------------


def message_id(secret: bytes, enrollment_id: int, step_id: str, domain: str) -> str:
    """The Message-ID of one step of one enrollment: the same on every retry, and signed so
    replies can be matched back without trusting a guessable number."""
    if isinstance(enrollment_id, bool) or enrollment_id < 0:
        raise ValueError(f"enrollment_id: must be a non-negative integer, got {enrollment_id!r}")
    if STEP_ID_PATTERN.fullmatch(step_id) is None:
        raise ValueError(
            f"step_id: {step_id!r} may only contain lowercase letters, digits, '_' and '-'"
        )
    host = domain.strip().lower()
    if _DOMAIN.fullmatch(host) is None:
        raise ValueError(
            f"domain: {domain!r} is not an ASCII domain name (write internationalised "
            "domains in their xn-- form)"
        )
    return f"<s{enrollment_id}.{step_id}.{_message_tag(secret, enrollment_id, step_id)}@{host}>"


def parse_message_id(secret: bytes, value: str) -> tuple[int, str] | None:
    """(enrollment_id, step_id) of a Message-ID made by ``message_id`` with this secret, else
    None. Never raises: the value comes from inbound mail."""
    text = value.strip()
    if len(text) > _MAX_LINE:
        return None
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    match = _OUR_MESSAGE_ID.fullmatch(text)
    if match is None:
        return None
    enrollment_id, step_id = int(match[1]), match[2]
    if not hmac.compare_digest(match[3], _message_tag(secret, enrollment_id, step_id)):
        return None
    return enrollment_id, step_id


def thread_index(root_message_id: str, root_date: datetime, replies: int) -> str:
    """Outlook's Thread-Index for the message after ``replies`` earlier ones in a thread.

    Deterministic: the 22-byte header depends only on the thread's first message, so
    Outlook groups every message of the thread, and a retry repeats the same value.
    """
    if root_date.tzinfo is None or root_date.utcoffset() is None:
        raise ValueError("root_date: must be timezone-aware")
    if not 0 <= replies <= _MAX_REPLIES:
        raise ValueError(f"replies: must be from 0 to {_MAX_REPLIES}, got {replies}")
    elapsed = root_date - _FILETIME_EPOCH
    filetime = (elapsed.days * 86_400 + elapsed.seconds) * 10_000_000 + elapsed.microseconds * 10
    if filetime < 0:
        raise ValueError("root_date: must be after 1601-01-01 UTC")
    guid = hashlib.sha256(root_message_id.encode("utf-8", "surrogatepass")).digest()[:16]
    blocks = [(filetime >> 16).to_bytes(6, "big") + guid]
    for reply in range(1, replies + 1):
        blocks.append(_child_block(root_message_id, reply))
    return base64.b64encode(b"".join(blocks)).decode("ascii")


def _child_block(root_message_id: str, reply: int) -> bytes:
    # Reply n is placed n days after the root: any increasing delta orders the thread, and
    # deriving it from n keeps the value the same on every retry.
    delta = reply * _FILETIME_DAY
    code = 0 if delta < 1 << 49 else 1
    time_delta = delta >> (18 if code == 0 else 23)
    # The "random" nibbles only need to differ between replies; a hash keeps them stable.
    noise = hashlib.sha256(f"{root_message_id}\0{reply}".encode("utf-8", "surrogatepass"))
    value = (code << 39) | ((time_delta & 0x7FFF_FFFF) << 8) | noise.digest()[0]
    return value.to_bytes(5, "big")


def _message_tag(secret: bytes, enrollment_id: int, step_id: str) -> str:
    digest = hmac.new(secret, f"{enrollment_id}:{step_id}".encode("ascii"), hashlib.sha256)
    return digest.hexdigest()[:10]


# -- subjects and addresses -------------------------------------------------------------------


def reply_subject(subject: str) -> str:
    """``subject`` as a reply: "Re: " added unless it already starts with a Re: prefix."""
    text = subject.strip()
    if _REPLY_PREFIX.match(text):
        return text
    return f"Re: {text}" if text else "Re:"


def address_domain(address: str) -> str:
    """The domain of a valid email address, lowercased; ValueError for an invalid address."""
    return _checked_address("address", address).rpartition("@")[2].lower()


def clean_header_text(value: str) -> str:
    """The text a header carries for ``value``: control characters and line separators become
    spaces, runs of spaces collapse to one and the ends are trimmed."""
    spaced = "".join(" " if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in value)
    return " ".join(word for word in spaced.split(" ") if word)


def _checked_address(field: str, value: str) -> str:
    if not value:
        raise ValueError(f"{field}: an email address is required")
    if any(ch.isspace() or unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in value):
        raise ValueError(f"{field}: {value!r} contains whitespace or control characters")
    if any(ch in "<>," for ch in value):
        raise ValueError(
            f"{field}: {value!r} contains '<', '>' or ','; give only the address "
            "(name@example.com), the name has its own field"
        )
    if value.count("@") != 1:
        raise ValueError(f"{field}: {value!r} must contain exactly one '@'")
    if not value.isascii():
        raise ValueError(
            f"{field}: {value!r} is not ASCII; internationalised addresses are not supported"
        )
    if len(value) > _MAX_ADDRESS:
        raise ValueError(f"{field}: {value!r} is longer than {_MAX_ADDRESS} characters")
    local, _, domain = value.partition("@")
    # "=?" would let a lenient parser decode an encoded word inside the address.
    if _DOT_ATOM.fullmatch(local) is None or "=?" in local:
        raise ValueError(f"{field}: {value!r} has an invalid part before the '@'")
    if _DOMAIN.fullmatch(domain) is None:
        raise ValueError(f"{field}: {value!r} has an invalid domain {domain!r}")
    return value


# -- building the message ---------------------------------------------------------------------


class _Formatted(str):
    """A header value this module has already encoded and folded; stored exactly as is."""


if TYPE_CHECKING:
    _EmailPolicy = EmailPolicy[EmailMessage]
else:  # generic only in the type stubs
    _EmailPolicy = EmailPolicy


class _ComposePolicy(_EmailPolicy):
    """SMTP policy that keeps this module's header values exactly as formatted.

    The stdlib header registry decodes encoded words it is given and, before Python 3.11.10,
    writes the decoded text back out unchecked, so a name like "=?utf-8?q?x=0D=0ABcc:...?="
    would become a real Bcc line; it also turns long unbreakable values (Thread-Index,
    List-Unsubscribe) into encoded words that mail clients don't decode there.
    """

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        """Keep pre-formatted values verbatim; hand everything else to the header registry."""
        if isinstance(value, _Formatted):
            return name, str(value)
        return super().header_store_parse(name, value)


# cte_type 7bit: bodies go out as quoted-printable or base64, never as raw 8-bit data that
# a server without 8BITMIME could mangle; refold_source none: our folds are kept.
_POLICY = _ComposePolicy(linesep="\r\n", cte_type="7bit", refold_source="none")


def build_message(email: OutgoingEmail) -> EmailMessage:
    """The MIME message for one outgoing email; ValueError names the field that is wrong.

    Names, subject and topic are cleaned with ``clean_header_text`` and encoded per RFC 2047
    where needed, so no prospect or sender data can add a header.
    """
    from_address = _checked_address("from_address", email.from_address)
    to_address = _checked_address("to_address", email.to_address)
    if email.date.tzinfo is None or email.date.utcoffset() is None:
        raise ValueError("date: must be timezone-aware")

    message = EmailMessage(policy=_POLICY)
    _set(message, "From", _address_tokens(email.from_name, from_address), "from_name")
    _set(message, "To", _address_tokens(email.to_name or "", to_address), "to_name")
    _set(message, "Subject", _text_tokens(clean_header_text(email.subject)), "subject")
    _set(message, "Date", [format_datetime(email.date)], "date")
    _set(message, "Message-ID", [_checked_message_id("message_id", email.message_id)], "message_id")
    if email.in_reply_to is not None:
        in_reply_to = _checked_message_id("in_reply_to", email.in_reply_to)
        _set(message, "In-Reply-To", [in_reply_to], "in_reply_to")
    if email.references:
        references = [
            _checked_message_id(f"references[{i}]", ref) for i, ref in enumerate(email.references)
        ]
        _set(message, "References", references, "references")
    if email.thread_topic is not None:
        topic = _text_tokens(clean_header_text(email.thread_topic))
        _set(message, "Thread-Topic", topic, "thread_topic")
    if email.thread_index is not None:
        if _BASE64.fullmatch(email.thread_index) is None:
            raise ValueError(f"thread_index: {email.thread_index!r} is not base64")
        _set(message, "Thread-Index", [email.thread_index], "thread_index")
    _set_unsubscribe(message, email.unsubscribe_url, email.unsubscribe_mailto)
    message["MIME-Version"] = "1.0"

    message.set_content(email.text, subtype="plain", charset="utf-8")
    if email.html is not None:
        message.add_alternative(email.html, subtype="html", charset="utf-8")
        for part in message.iter_parts():
            # MIME-Version belongs on the message only; add_alternative repeats it in parts.
            del part["MIME-Version"]
    return message


def message_bytes(message: EmailMessage) -> bytes:
    """The message as it goes over SMTP: CRLF line endings, 7-bit clean."""
    return message.as_bytes(policy=_POLICY)


def _set_unsubscribe(message: EmailMessage, url: str | None, mailto: str | None) -> None:
    targets: list[str] = []
    if url is not None:
        if _HTTP_URL.fullmatch(url) is None:
            raise ValueError(
                f"unsubscribe_url: {url!r} must be an http(s) URL without spaces, '<', '>' or ','"
            )
        targets.append(f"<{url}>,")
    if mailto is not None:
        if _MAILTO_URL.fullmatch(mailto) is None:
            raise ValueError(
                f"unsubscribe_mailto: {mailto!r} must be a mailto: URL without spaces, "
                "'<', '>' or ','"
            )
        targets.append(f"<{mailto}>,")
    if not targets:
        return
    targets[-1] = targets[-1].rstrip(",")
    _set(message, "List-Unsubscribe", targets, "unsubscribe_url")
    # RFC 8058: one-click unsubscribe is only defined for an HTTPS target.
    if url is not None and url[:8].lower() == "https://":
        _set(message, "List-Unsubscribe-Post", ["List-Unsubscribe=One-Click"], "unsubscribe_url")


def _checked_message_id(field: str, value: str) -> str:
    if _MESSAGE_ID.fullmatch(value) is None:
        raise ValueError(f"{field}: {value!r} is not a Message-ID like <id@example.com>")
    return value


def _set(message: EmailMessage, name: str, tokens: list[str], field: str) -> None:
    """Add header ``name`` made of ASCII ``tokens``, folded between tokens near 78 columns."""
    lines: list[str] = []
    current = ""
    width = len(name) + 2  # "Name: "
    for token in tokens:
        if not current:
            current = token
        elif width + len(current) + 1 + len(token) <= _FOLD_AT:
            current = f"{current} {token}"
        else:
            lines.append(current)
            current, width = token, 1  # a continuation line starts with one space
    lines.append(current)
    if max(len(name) + 2 + len(lines[0]), *(len(line) + 1 for line in lines)) > _MAX_LINE:
        raise ValueError(f"{field}: too long for a {name} header line ({_MAX_LINE} characters)")
    message[name] = _Formatted("\n ".join(lines))


def _address_tokens(name: str, address: str) -> list[str]:
    display = clean_header_text(name)
    if not display:
        return [address]
    return [*_phrase_tokens(display), f"<{address}>"]


def _phrase_tokens(display: str) -> list[str]:
    # Plain atoms where the name allows it (spam filters frown on needless encoding), a
    # quoted string for other ASCII, encoded words for the rest. "=?" is always encoded:
    # some parsers decode encoded words even inside quoted strings.
    if "=?" not in display and len(display) <= _MAX_PLAIN_WORD:
        words = display.split(" ")
        if all(_ATOM.fullmatch(word) for word in words):
            return words
        if display.isascii() and display.isprintable():
            escaped = display.replace("\\", "\\\\").replace('"', '\\"')
            return [f'"{escaped}"']
    return _encoded_words(display)


def _text_tokens(text: str) -> list[str]:
    """Unstructured text as plain words and encoded words; decodes back to ``text``."""
    tokens: list[str] = []
    # Consecutive words that need encoding share encoded words, the spaces between included.
    for plain, group in itertools.groupby(text.split(" ") if text else [], key=_is_plain):
        words = list(group)
        tokens.extend(words if plain else _encoded_words(" ".join(words)))
    return tokens


def _is_plain(word: str) -> bool:
    return (
        word.isascii() and word.isprintable() and "=?" not in word and len(word) <= _MAX_PLAIN_WORD
    )


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 UTF-8 encoded words of at most 75 characters each.

    Q or B, whichever is shorter. Words are split between characters, never inside one, and
    decoders drop the whitespace between adjacent encoded words, so the text comes back exactly.
    """
    data = text.encode("utf-8")
    use_q = _encoded_length(data, True) <= _encoded_length(data, False)
    room = _MAX_ENCODED_WORD - len("=?utf-8?q??=")
    words: list[str] = []
    chunk = b""
    for ch in text:
        piece = ch.encode("utf-8")
        if chunk and _encoded_length(chunk + piece, use_q) > room:
            words.append(_encoded_word(chunk, use_q))
            chunk = b""
        chunk += piece
    if chunk:
        words.append(_encoded_word(chunk, use_q))
    return words


def _encoded_length(data: bytes, use_q: bool) -> int:
    if use_q:
        return sum(1 if byte in _Q_SAFE or byte == 0x20 else 3 for byte in data)
    return 4 * ((len(data) + 2) // 3)


def _encoded_word(data: bytes, use_q: bool) -> str:
    if not use_q:
        return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="
    # Only the characters RFC 2047 allows in a phrase, so the same words fit every header.
    payload = "".join(
        "_" if byte == 0x20 else chr(byte) if byte in _Q_SAFE else f"={byte:02X}" for byte in data
    )
    return f"=?utf-8?q?{payload}?="
