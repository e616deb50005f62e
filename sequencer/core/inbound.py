"""What an inbound message is: a bounce, auto-reply, out-of-office, unsubscribe or reply."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from email.header import decode_header
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import getaddresses
from enum import StrEnum
from typing import Any, TypeVar

from sequencer.core.autoreplies import (
    Headers,
    detect_auto_reply,
    list_mail,
    noreply_sender,
    return_date,
)
from sequencer.core.bounces import detect_bounce
from sequencer.core.prospects import normalize_email
from sequencer.core.replies import (
    decode_text,
    html_to_text,
    is_unsubscribe_subject,
    strip_quoted,
    unsubscribe_phrase,
)

_T = TypeVar("_T")

#: Longest ``Classification.text`` kept.
MAX_TEXT = 20_000
#: Characters of all text parts together looked at (bounces quote our message at the end).
MAX_ALL_TEXT = 400_000
#: Parts of a message looked at.
MAX_PARTS = 500
#: Bytes of a message read at all; the watcher fetches headers and the first text part.
MAX_BYTES = 10_000_000


class InboundKind(StrEnum):
    """What an inbound message is, as far as a sequence is concerned."""

    BOUNCE = "bounce"
    AUTO_REPLY = "auto_reply"
    OUT_OF_OFFICE = "out_of_office"
    UNSUBSCRIBE = "unsubscribe"
    REPLY = "reply"
    UNRELATED = "unrelated"


@dataclass(frozen=True)
class Classification:
    """What ``classify`` found out about one inbound message."""

    kind: InboundKind
    sender: str | None  # normalised From address
    subject: str
    message_id: str | None
    in_reply_to: tuple[str, ...]  # References, then In-Reply-To, without repeats
    recipients: tuple[str, ...] = ()  # bounces: the failed recipients
    status: str | None = None  # bounces: enhanced status code such as "5.1.1"
    permanent: bool | None = None  # bounces
    reason: str = ""  # a short explanation for people
    return_date: date | None = None  # out-of-office, when stated
    original_message_id: str | None = None  # bounces: the Message-ID of our returned message
    text: str = ""  # the first text part, decoded (HTML crudely made text)
    reply_text: str = ""  # human replies: the new text, without history and signature

    def as_dict(self) -> dict[str, object]:
        """The classification as JSON-friendly values: lists for tuples, ISO dates."""
        return {
            "kind": self.kind.value,
            "sender": self.sender,
            "subject": self.subject,
            "message_id": self.message_id,
            "in_reply_to": list(self.in_reply_to),
            "recipients": list(self.recipients),
            "status": self.status,
            "permanent": self.permanent,
            "reason": self.reason,
            "return_date": self.return_date.isoformat() if self.return_date else None,
            "original_message_id": self.original_message_id,
            "text": self.text,
            "reply_text": self.reply_text,
        }


def classify(raw: bytes, *, today: date, our_domains: Iterable[str] = ()) -> Classification:
    """What the inbound message ``raw`` is; never raises, whatever the bytes.

    Checked in this order: bounce (a delivery report that only says "delivered" is unrelated);
    our own message (From one of ``our_domains`` or a subdomain: a Sent-folder copy);
    automatic reply, which is out-of-office when its new text says the person is away, with
    the return date counted from ``today``; newsletter, list mail or notification (unrelated,
    unless it answers one of our messages: then a machine's answer is an auto-reply and a
    list's a reply); unsubscribe request; and otherwise a reply from a person. Calendar
    invitations and answers from a person are replies. Mail that can't be read at all, or has
    neither a sender nor a thread to match, is unrelated, with the reason saying so.
    """
    domains = (our_domains,) if isinstance(our_domains, str) else our_domains
    try:
        return _classify(bytes(raw), today, tuple(_clean_domain(d) for d in domains))
    except Exception as exc:  # the worker must never die on one bad message
        return Classification(
            InboundKind.UNRELATED, None, "", None, (), reason=f"unreadable message ({exc!r:.80})"
        )


# -- the decision -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    message: Message
    headers: Headers
    sender_raw: str
    sender: str | None
    subject: str
    message_id: str | None
    in_reply_to: tuple[str, ...]
    text: str
    all_text: str
    parts: tuple[Message, ...]
    has_calendar: bool


def _classify(raw: bytes, today: date, our_domains: tuple[str, ...]) -> Classification:
    read = _read(raw[:MAX_BYTES])
    base = Classification(
        InboundKind.UNRELATED, read.sender, read.subject, read.message_id, read.in_reply_to,
        text=read.text,
    )  # fmt: skip

    # Our own mailbox appears in a bounce (To, the returned copy), never as a failed recipient.
    own = {
        a for name in ("to", "cc", "delivered-to", "envelope-to") for a in _addresses(read, name)
    }

    def is_ours(address: str) -> bool:
        return address in own or _in_domains(address, our_domains)

    bounce = _guard(
        lambda: detect_bounce(
            read.message,
            read.parts,
            sender=read.sender_raw,
            subject=read.subject,
            text=read.text,
            all_text=read.all_text,
            own_message_id=read.message_id,
            is_ours=is_ours,
        )
    )
    if bounce is not None and bounce.failed:
        return _replace(
            base, InboundKind.BOUNCE, bounce.reason, recipients=bounce.recipients,
            status=bounce.status, permanent=bounce.permanent,
            original_message_id=bounce.original_message_id,
        )  # fmt: skip
    if bounce is not None:
        return _replace(base, InboundKind.UNRELATED, bounce.reason)
    if read.sender is not None and _in_domains(read.sender, our_domains):
        return _replace(base, InboundKind.UNRELATED, "our own message (sent from our domain)")

    reply_text = _guard(lambda: strip_quoted(read.text)) or ""
    base = _replace(base, InboundKind.UNRELATED, "", reply_text=reply_text)
    if _report_type(read.message) == "disposition-notification":
        return _replace(base, InboundKind.AUTO_REPLY, "read receipt (disposition notification)")
    auto = _guard(lambda: detect_auto_reply(read.headers, read.subject, reply_text))
    refers = bool(read.in_reply_to) or _REPLY_SUBJECT.match(read.subject) is not None
    if auto is not None and (auto.replying or auto.out_of_office or refers):
        if auto.out_of_office:
            back = _guard(lambda: return_date(reply_text or read.text, today))
            return _replace(base, InboundKind.OUT_OF_OFFICE, auto.reason, return_date=back)
        return _replace(base, InboundKind.AUTO_REPLY, auto.reason)
    listed, noreply = list_mail(read.headers), noreply_sender(read.sender)
    if auto is not None:
        why = listed or noreply or f"notification ({auto.reason})"
        return _replace(base, InboundKind.UNRELATED, why)
    if listed or noreply:
        if not _refers_to_us(read.in_reply_to, our_domains):
            return _replace(base, InboundKind.UNRELATED, listed or noreply or "")
        if noreply:  # a machine answering our message; a list may carry a person's reply
            return _replace(base, InboundKind.AUTO_REPLY, noreply)
    if is_unsubscribe_subject(read.subject):
        return _replace(base, InboundKind.UNSUBSCRIBE, "subject is 'unsubscribe'")
    phrase = _guard(lambda: unsubscribe_phrase(reply_text))
    if phrase is not None:
        return _replace(base, InboundKind.UNSUBSCRIBE, f"asks to stop: {phrase!r}")
    if read.sender is None and not read.in_reply_to:
        return _replace(base, InboundKind.UNRELATED, "no sender and no conversation to match")
    if read.has_calendar:
        return _replace(base, InboundKind.REPLY, "calendar invitation or answer from a person")
    if _refers_to_us(read.in_reply_to, our_domains):
        return _replace(base, InboundKind.REPLY, "reply to one of our messages")
    if refers:
        return _replace(base, InboundKind.REPLY, "reply in a conversation")
    return _replace(base, InboundKind.REPLY, "personal message from the sender")


_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_REPLY_SUBJECT = re.compile(r"^\s*(?:re|aw|antw|sv|vs|r|rif|ref|res|odp)\s*(?:\[\d+\])?\s*:", re.I)
# Our Message-IDs (sequencer.mail.compose.message_id); the tag is checked where the secret is.
_OUR_ID = re.compile(r"<s\d+\.[a-z0-9_-]+\.[0-9a-f]{10}@[^>]+>")


def _refers_to_us(ids: tuple[str, ...], our_domains: tuple[str, ...]) -> bool:
    """True when the thread names one of our messages."""
    return any(_OUR_ID.fullmatch(v) or _in_domains(v.strip("<>"), our_domains) for v in ids)


def _in_domains(address: str, domains: tuple[str, ...]) -> bool:
    domain = address.rpartition("@")[2].lower().rstrip(".")
    return any(domain == d or domain.endswith("." + d) for d in domains if d)


def _clean_domain(domain: str) -> str:
    return str(domain).strip().lower().lstrip("@").rstrip(".")


def _replace(base: Classification, kind: InboundKind, reason: str, **fields: Any) -> Classification:
    return dataclasses.replace(base, kind=kind, reason=reason, **fields)


def _guard(step: Callable[[], _T]) -> _T | None:
    """``step()``, or None when it fails: one broken detector must not hide the others."""
    try:
        return step()
    except Exception:
        return None


# -- reading the message ------------------------------------------------------------------------


def _read(raw: bytes) -> _Read:
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except RecursionError:
        # The stdlib parser recurses once per nested part: read hopeless nesting flat.
        message = BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    headers: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        headers.setdefault(str(name).strip().lower(), []).append(_header_text(value))
    sender_raw = (headers.get("from") or headers.get("sender") or [""])[0]
    walked = _walk(message)
    texts = _texts(walked)
    return _Read(
        message=message,
        headers=headers,
        sender_raw=sender_raw,
        sender=_address(sender_raw),
        subject=" ".join((headers.get("subject") or [""])[0].split())[:998],
        message_id=next(iter(_ids(headers.get("message-id", []))), None),
        in_reply_to=tuple(
            dict.fromkeys(_ids(headers.get("references", []) + headers.get("in-reply-to", [])))
        ),
        text=texts[0][:MAX_TEXT] if texts else "",
        all_text="\n".join(texts)[:MAX_ALL_TEXT],
        parts=tuple(part for part, _, _ in walked),
        has_calendar=any(part.get_content_type() == "text/calendar" for part, _, _ in walked),
    )


def _header_text(value: object) -> str:
    """A header value as text: encoded words decoded, stray 8-bit bytes read as UTF-8."""
    text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = re.sub(r"\r?\n[ \t]", " ", text)
    try:
        chunks = decode_header(text)
        text = "".join(c if isinstance(c, str) else decode_text(c, cs) for c, cs in chunks)
    except Exception:  # an undecodable encoded word stays as written
        pass
    return "".join(" " if ch in "\r\n\t\x00" else ch for ch in text).strip()


def _addresses(read: _Read, header: str) -> list[str]:
    values = read.headers.get(header, [])
    return [normalize_email(a) for _, a in getaddresses(values) if "@" in a]


def _address(value: str) -> str | None:
    for _, address in getaddresses([value]):
        if "@" in address and " " not in address.strip():
            return normalize_email(address)
    return None


def _ids(values: list[str]) -> list[str]:
    found: list[str] = []
    for value in values:
        brackets = re.findall(r"<[^<>\s]{1,250}>", value)
        found.extend(brackets or [f"<{w}>" for w in value.split() if "@" in w and len(w) < 250])
    return found


def _report_type(message: Message) -> str:
    if message.get_content_type() != "multipart/report":
        return ""
    return str(message.get_param("report-type", "") or "").strip().lower()


def _texts(walked: list[tuple[Message, bool, bool]]) -> list[str]:
    """Every text part, decoded. First comes the first plain part outside attached messages,
    or else the first such HTML part made text; then the rest in order."""
    found: list[tuple[int, str]] = []  # (rank, text); lower ranks are better first parts
    for part, nested, leaf in walked:
        if not leaf or sum(len(text) for _, text in found) > MAX_ALL_TEXT:
            continue
        ctype = part.get_content_type()
        attached = str(part.get("content-disposition", "")).strip().lower().startswith("attach")
        if ctype == "text/plain":
            found.append((2 * (attached or nested), _part_text(part)))
        elif ctype == "text/html":
            found.append((1 + 2 * (attached or nested), html_to_text(_part_text(part))))
        elif ctype.startswith("text/"):
            found.append((4, _part_text(part)))
        elif ctype in _STATUS_TYPES:
            found.append((4, _status_text(part)))
    if not found:
        return []
    best = min(range(len(found)), key=lambda i: (found[i][0], i))
    return [found[best][1]] + [text for i, (_, text) in enumerate(found) if i != best]


def _walk(message: Message) -> list[tuple[Message, bool, bool]]:
    """(part, inside an attached message, holds content) for every part, depth first.

    Message.walk() recurses, and so fails on deeply nested mail. A multipart whose boundary
    is missing is split on the first "--" line in its body, which is what its writer meant.
    """
    found: list[tuple[Message, bool, bool]] = []
    stack: list[tuple[Message, bool]] = [(message, False)]
    while stack and len(found) < MAX_PARTS:
        part, nested = stack.pop()
        payload = _payload(part)
        children: list[Message] = []
        if isinstance(payload, list) and part.get_content_type() not in _STATUS_TYPES:
            children = [child for child in payload if isinstance(child, Message)]
        elif part.get_content_maintype() == "multipart" and isinstance(payload, str):
            children = _recover_parts(payload)
        found.append((part, nested, not children))
        inner = nested or part.get_content_maintype() == "message"
        stack.extend((child, inner) for child in reversed(children))
    return found


def _status_text(part: Message) -> str:
    payload = _payload(part)
    if isinstance(payload, list):
        blocks = [block for block in payload if isinstance(block, Message)]
        return "\n\n".join("\n".join(f"{k}: {v}" for k, v in b.raw_items()) for b in blocks)
    return _part_text(part)


def _payload(part: Message) -> object:
    """``part.get_payload()``; the stdlib raises on some broken parts (a NUL in the charset)."""
    try:
        return part.get_payload()
    except (ValueError, LookupError, TypeError):
        return ""


def _recover_parts(body: str) -> list[Message]:
    marker = re.search(r"^--([^\s]{1,200})\s*$", body, re.MULTILINE)
    if marker is None:
        return [email.message_from_string("Content-Type: text/plain\n\n" + body)]
    chunks = re.split(rf"^--{re.escape(marker.group(1))}(?:--)?\s*$", body, flags=re.MULTILINE)
    return [_parse_part(c.lstrip("\r\n")) for c in chunks[1:] if c.strip()]


def _parse_part(text: str) -> Message:
    try:
        return email.message_from_string(text)
    except RecursionError:
        return HeaderParser().parsestr(text)


def _part_text(part: Message) -> str:
    payload = _payload(part)
    try:
        data = part.get_payload(decode=True)
    except (ValueError, LookupError, TypeError):
        data = None
    if not isinstance(data, bytes):
        return payload if isinstance(payload, str) else ""
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    undecoded = isinstance(payload, str) and data.strip() == payload.strip().encode(
        "ascii", "replace"
    )
    if cte == "base64" and undecoded and isinstance(payload, str):
        data = _base64_prefix(payload)  # the stdlib hands back undecodable base64 as it is
    return decode_text(data[: MAX_TEXT * 8], part.get_content_charset())


def _base64_prefix(payload: str) -> bytes:
    """What the valid start of a damaged base64 body decodes to."""
    valid = re.match(r"[A-Za-z0-9+/\s]*", payload)
    chars = re.sub(r"\s", "", valid.group(0) if valid else "")
    try:
        return base64.b64decode(chars[: len(chars) // 4 * 4])
    except ValueError:
        return payload.encode("ascii", "replace")
