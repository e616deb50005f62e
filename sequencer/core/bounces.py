"""Bounces: RFC 3464 delivery status reports and the text formats of common mail servers."""

from __future__ import annotations

import binascii
import dataclasses
import email
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message

#: What the enhanced status codes of RFC 3463 mean, most specific first.
STATUS_MEANINGS: dict[str, str] = {
    "1.1": "mailbox does not exist",
    "1.2": "domain does not exist",
    "1.3": "address is not valid",
    "1.6": "mailbox has moved",
    "2.1": "mailbox disabled",
    "2.2": "mailbox full",
    "2.3": "message too large for the mailbox",
    "3.1": "mail system full",
    "3.2": "mail system not accepting messages",
    "3.4": "message too large",
    "4.1": "no answer from the recipient's server",
    "4.2": "connection to the recipient's server dropped",
    "4.3": "DNS failure",
    "4.4": "unable to route",
    "4.6": "mail loop",
    "4.7": "delivery time expired",
    "7.1": "rejected by the recipient's server (policy)",
    "1": "address problem",
    "2": "mailbox problem",
    "3": "mail system problem",
    "4": "network or routing problem",
    "5": "mail protocol problem",
    "6": "message content not accepted",
    "7": "rejected by the recipient's server (policy or spam)",
}


def _any(*phrases: str) -> re.Pattern[str]:
    """One case-insensitive pattern for regex ``phrases`` in which a space stands for a run of
    whitespace (servers wrap their lines anywhere); write an optional space as ``\\s?``."""
    joined = "|".join(phrase.replace(" ", r"\s+") for phrase in phrases)
    return re.compile(joined, re.IGNORECASE | re.MULTILINE)


#: Words that explain a failure without a status code: (pattern, explanation, permanent).
_WORDS: tuple[tuple[re.Pattern[str], str, bool | None], ...] = (
    (
        _any(r"mailbox (?:is )?full", r"over\s?quota", "quota exceeded", "insufficient storage"),
        "mailbox full",
        False,
    ),
    (
        _any(
            r"does\s?n[o']t exist", "unknown user", "user unknown", r"no such (?:user|mailbox)",
            "address not found", r"could\s?n[o']t be found", "recipient not found",
            "recipnotfound", "invalid recipient", "unrouteable address", "mailbox unavailable",
            "recipient name is not recognized", "unknown recipient",
            r"does\s?n[o']t have an? \S+ account", "account that you tried to reach",
        ),
        "mailbox does not exist",
        True,
    ),
    (
        _any(r"(?:account|mailbox) (?:is |has been )?(?:disabled|inactive|suspended)"),
        "mailbox disabled",
        True,
    ),
    (
        _any(r"host (?:or domain name )?not found", r"domain (?:not found|does not exist)"),
        "domain does not exist",
        True,
    ),
    (_any(r"\bspam\b", "blocked", r"block\s?list", r"black\s?list"), "rejected as spam", None),
    (_any(r"too (?:large|big)", "size exceeds"), "message too large", True),
    (
        _any("temporar", "try again later", "deferred", "delayed", "not yet been delivered",
             "will be retried", "still trying"),
        "temporary failure",
        False,
    ),
    (
        _any(r"timed?\s?out", "connection refused", "no answer", "unreachable", "not reachable",
             "not responding"),
        "could not reach the recipient's server",
        False,
    ),
    (
        _any("permanent", "fatal", "given up", "could not be delivered"),
        "delivery failed",
        True,
    ),
)  # fmt: skip
_DELAYED = _any(
    "has not yet been delivered", "has been delayed", r"delivery (?:is )?delayed", r"\(delay\)",
    r"will (?:be retried|keep trying|continue trying|retry)", "still trying",
    "no action is required", "transient non-fatal", "could not send message for past",
)  # fmt: skip
#: Texts that only a mail server writes, with the name of the format.
SIGNATURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("qmail", _any(r"^hi\. this is the qmail-send program")),
    (
        "exim",
        _any(r"(?:could not be|has not yet been) delivered to one or more of its recipients"),
    ),
    ("sendmail", _any(r"^\s*-+ the following addresses had (?:permanent fatal|transient)")),
    (
        "exchange",
        _any("delivery has failed to these recipients or groups", r"remote server returned '[45]"),
    ),
    (
        "gmail",
        _any(
            r"^\W*address not found\W*$", "the email account that you tried to reach does not",
            r"delivery to the following recipients? (?:failed permanently|has been delayed)",
        ),
    ),
    ("yahoo", _any("sorry, we were unable to deliver your message to the following")),
    ("postfix", _any(r"^this is the mail system at host\s")),
)  # fmt: skip
_DAEMON_LOCAL_PARTS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_DAEMON_NAME = re.compile(r"mail\s+delivery\s+(?:subsystem|system|service)|mailer-daemon", re.I)
_FAILURE_SUBJECT = re.compile(
    r"undeliver|returned\s+mail|delivery\s+status\s+notification|delivery\s+(?:failure|failed)"
    r"|mail\s+delivery\s+failed|failure\s+notice|could\s+not\s+send|non-?delivery|not\s+delivered"
    r"|delayed|returned\s+to\s+sender|unzustellbar|nicht\s+zustellbar|non\s+remis|no\s+entregado"
    r"|no\s+se\s+puede\s+entregar|non\s+recapitabile|onbestelbaar|delivery\s+(?:problem|notification)",
    re.IGNORECASE,
)
_DELAY_SUBJECT = re.compile(
    r"^\W*(?:warning:.{0,60}\bdelayed\b|delayed\s+mail|delivery\s+delayed)|\(delay\)", re.I
)
# Where the copy of the returned message starts in a text bounce; recipients come before it.
_COPY_START = re.compile(
    r"^.*(?:below\s+this\s+line\s+is\s+a\s+copy|this\s+is\s+a\s+copy\s+of\s+the\s+message"
    r"|original\s+message\s+(?:follows|headers)|-{3,}\s*original\s+message|transcript\s+of\s+session"
    r"|^reporting-mta:|^received:\s).*$",
    re.IGNORECASE | re.MULTILINE,
)
_ADDRESS = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
# An address alone on its line ("  jdoe@example.com", "<jdoe@example.com>:"), or opening one
# ("<jdoe@example.com>: host mx.example.com said: 550 ...", Postfix).
_ADDRESS_LINE = re.compile(
    rf"^\s*<?({_ADDRESS})>?\s*:?\s*(?:\([^)]*\))?\s*(?:\.\.\..*)?$|^\s*<({_ADDRESS})>:",
    re.MULTILINE,
)
_ADDRESS_SENTENCE = re.compile(
    rf"(?:message\s+to|delivered\s+to|delivery\s+to|deliver\s+to|recipient|address)\s*:?\s*<?({_ADDRESS})>?",
    re.IGNORECASE,
)
_ENHANCED = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.]?\d)")
_BASIC = re.compile(r"(?<![\d.#-])([45]\d\d)(?=[\s:-]|$)", re.MULTILINE)
_MESSAGE_ID_FIELD = re.compile(
    r"^\s*message-id:\s*(<[^<>\s]{3,250}>)", re.IGNORECASE | re.MULTILINE
)
_OUR_ID = re.compile(r"<s\d+\.[a-z0-9_-]+\.[0-9a-f]{10}@[^>]+>")
_MAX_RECIPIENTS = 50


@dataclass(frozen=True)
class Bounce:
    """What a delivery report says: who could not get our message, and why."""

    recipients: tuple[str, ...]
    status: str | None
    permanent: bool | None
    reason: str
    original_message_id: str | None
    #: "dsn" for RFC 3464 reports, otherwise the server's text format ("qmail", "exim", ...).
    format: str
    #: False for reports that only say a message was delivered or relayed.
    failed: bool = True


def detect_bounce(
    message: Message,
    parts: Sequence[Message],
    *,
    sender: str,
    subject: str,
    text: str,
    all_text: str,
    own_message_id: str | None,
    is_ours: Callable[[str], bool],
) -> Bounce | None:
    """The bounce ``message`` is, or None. ``parts`` are all its parts, itself included;
    ``sender`` is the raw From value, ``text`` the first text part, ``all_text`` every text part
    joined; ``is_ours`` says which addresses to leave out of the recipients (our own mailboxes
    appear in the returned copy)."""
    original = _original_message_id(parts, all_text, own_message_id)
    head = _before_copy(text[:20_000])
    blocks = _status_blocks(parts)
    if blocks is not None:
        report = _from_dsn(blocks, text, original)
        if report.failed and not report.recipients:  # a damaged report: read its text too
            found = tuple(_text_recipients(message, head, is_ours)[:_MAX_RECIPIENTS])
            report = dataclasses.replace(report, recipients=found)
        return report
    kind = next((name for name, pattern in SIGNATURES if pattern.search(head[:6000])), None)
    if kind is None:
        if not (_is_daemon(sender) and _FAILURE_SUBJECT.search(subject)):
            return None
        kind = "daemon"
    recipients = _text_recipients(message, head, is_ours)
    status, basic = _codes(head)
    delayed = _DELAYED.search(head) is not None or _DELAY_SUBJECT.search(subject) is not None
    return _verdict(recipients, status, basic, delayed, head, original, kind)


def _from_dsn(blocks: list[dict[str, str]], text: str, original: str | None) -> Bounce:
    recipients: list[str] = []
    statuses: list[str] = []
    diagnostics: list[str] = []
    delayed = False
    actions: set[str] = set()
    for block in blocks:
        address = _dsn_address(block.get("original-recipient", "")) or _dsn_address(
            block.get("final-recipient", "")
        )
        if address is None and not {"action", "status"} & block.keys():
            continue  # the per-message block
        action = block.get("action", "failed").strip().lower()
        actions.add(action)
        if action in {"delivered", "relayed", "expanded"}:
            continue
        delayed = delayed or action == "delayed"
        if address is not None and address not in recipients:
            recipients.append(address)
        status, _ = _codes(block.get("status", ""))
        diagnostic = " ".join(block.get("diagnostic-code", "").split())
        detailed, _ = _codes(diagnostic)
        # "5.0.0" says little; the server's own reply often carries the specific code.
        if (
            detailed
            and (status is None or status.endswith(".0.0"))
            and detailed[0] == (status or detailed)[0]
        ):
            status = detailed
        if status:
            statuses.append(status)
        if diagnostic:
            diagnostics.append(diagnostic.partition(";")[2].strip() or diagnostic)
    if not recipients and actions and actions <= {"delivered", "relayed", "expanded"}:
        what = "/".join(sorted(actions))
        return Bounce((), None, None, f"delivery report: {what}", original, "dsn", failed=False)
    status = statuses[0] if statuses else None
    context = " ".join(diagnostics) or _before_copy(text[:6000])
    _, basic = _codes(context)
    return _verdict(recipients, status, basic, delayed, context, original, "dsn")


def _verdict(
    recipients: Sequence[str],
    status: str | None,
    basic: str | None,
    delayed: bool,
    context: str,
    original: str | None,
    kind: str,
) -> Bounce:
    meaning, word_permanent = _explain_words(context)
    if delayed:
        permanent: bool | None = False
    elif status is not None:
        permanent = status[0] == "5"
    elif basic is not None:
        permanent = basic[0] == "5"
    else:
        permanent = word_permanent
    explained = (
        _explain_status(status, specific=True)
        or meaning
        or _explain_status(status, specific=False)
        or _diagnostic_line(context)
        or "delivery failed"
    )
    reason = (
        f"delivery delayed: {explained}" if delayed and "tempor" not in explained else explained
    )
    return Bounce(tuple(recipients[:_MAX_RECIPIENTS]), status, permanent, reason, original, kind)


def _status_blocks(parts: Sequence[Message]) -> list[dict[str, str]] | None:
    """The field blocks of the message/delivery-status part, or None without one."""
    for part in parts:
        ctype = part.get_content_type()
        if ctype not in {"message/delivery-status", "message/global-delivery-status"}:
            continue
        payload = _payload(part, decode=False)
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        if isinstance(payload, list) and cte != "base64":
            return [_fields(block) for block in payload if isinstance(block, Message)]
        if isinstance(payload, list):  # the parser read the base64 lines as field blocks
            encoded = "".join(str(_payload(b, decode=False) or "") for b in payload)
            letters = re.sub(r"[^A-Za-z0-9+/]", "", encoded)
            raw: object = binascii.a2b_base64(letters[: len(letters) // 4 * 4])
        else:
            raw = _payload(part, decode=True)
        source = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
        chunks = re.split(r"\r?\n\s*\r?\n", source)
        return [_fields(email.message_from_string(chunk.strip() + "\n")) for chunk in chunks]
    return None


def _original_message_id(parts: Sequence[Message], all_text: str, own: str | None) -> str | None:
    found: list[str] = []
    for part in parts:
        ctype = part.get_content_type()
        headers: Message | None = None
        # message/rfc822-headers is a common misspelling of text/rfc822-headers (RFC 6522).
        if ctype in {"message/rfc822", "message/global", "message/rfc822-headers"}:
            inner = _payload(part, decode=False)
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                headers = inner[0]
        elif ctype in {"text/rfc822-headers", "text/global-headers"}:
            raw = _payload(part, decode=True)
            if isinstance(raw, bytes):
                headers = email.message_from_string(raw.decode("utf-8", "replace"))
        if headers is not None:
            found.extend(v for k, v in _fields(headers).items() if k == "message-id")
    found.extend(_MESSAGE_ID_FIELD.findall(all_text[:200_000]))
    candidates = [m for m in (v.strip() for v in found) if m and m != own and len(m) < 300]
    ours = [m for m in candidates if _OUR_ID.fullmatch(m)]
    best = ours or candidates
    return best[0] if best else None


def _payload(part: Message, *, decode: bool) -> object:
    # The stdlib raises on some broken parts (a NUL in the charset parameter, say).
    try:
        return part.get_payload(decode=True) if decode else part.get_payload()
    except (ValueError, LookupError, TypeError):
        return None


def _fields(block: Message) -> dict[str, str]:
    """The header fields of ``block``, names lowercased, folded lines joined."""
    return {
        str(name).strip().lower(): " ".join(str(value).split()) for name, value in block.raw_items()
    }


def _text_recipients(message: Message, head: str, is_ours: Callable[[str], bool]) -> list[str]:
    found: list[str] = []
    for value in message.get_all("x-failed-recipients", []):
        found.extend(re.findall(_ADDRESS, str(value)))
    found.extend(alone or opening for alone, opening in _ADDRESS_LINE.findall(head))
    found.extend(_ADDRESS_SENTENCE.findall(head))
    recipients: list[str] = []
    for address in found:
        normal = address.strip().lower()
        if normal not in recipients and not is_ours(normal):
            recipients.append(normal)
    return recipients


def _dsn_address(value: str) -> str | None:
    kind, _, address = value.partition(";")
    text = (address if address else kind).strip().strip("<>").strip().lower()
    return text if re.fullmatch(_ADDRESS, text) else None


def _codes(text: str) -> tuple[str | None, str | None]:
    """The first enhanced status code ("5.1.1") and the first basic reply code ("550")."""
    enhanced = _ENHANCED.search(text)
    basic = _BASIC.search(text)
    status = ".".join(enhanced.groups()) if enhanced else None
    return status, basic.group(1) if basic else None


def _explain_status(status: str | None, *, specific: bool) -> str | None:
    """The meaning of ``status``: of its subject and detail ("1.1"), or of its subject alone."""
    if status is None:
        return None
    _, _, detail = status.partition(".")
    return STATUS_MEANINGS.get(detail if specific else detail.partition(".")[0])


def _explain_words(text: str) -> tuple[str | None, bool | None]:
    for pattern, meaning, permanent in _WORDS:
        if pattern.search(text[:6000]):
            return meaning, permanent
    return None, None


def _is_daemon(sender: str) -> bool:
    addresses = re.findall(r"([^\s<>\"@]+)@", sender)
    local = addresses[0].lower() if addresses else sender.strip().strip("<>").lower()
    return local in _DAEMON_LOCAL_PARTS or _DAEMON_NAME.search(sender) is not None


def _before_copy(text: str) -> str:
    match = _COPY_START.search(text)
    return text[: match.start()] if match else text


def _diagnostic_line(text: str) -> str:
    """The first line of ``text`` that carries a server reply code, shortened."""
    for line in text.splitlines()[:200]:
        if _BASIC.search(line) or _ENHANCED.search(line):
            return " ".join(line.split())[:160]
    return ""
