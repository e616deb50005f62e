"""When an inbound message reached our mail server, read from its own headers.

The reply-to-stop latency (how long a prospect's answer sat in the inbox before their sequence
stopped) is measured from this moment. The top-most ``Received:`` header is stamped by the
last server that handled the message, the one that put it in the mailbox, so its clock is the
provider's, not the sender's; ``Date:`` (the sender's clock) is the fallback when no server
stamped the message, as with IMAP APPEND.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

#: Headers are looked for in this many bytes at most; a message body is never parsed.
MAX_HEADER_BYTES = 256 * 1024
#: A stamp older than this is not believed (a broken clock or a forged header).
OLDEST = timedelta(days=365)

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"^([!-9;-~]+):[ \t]*(.*)$")


def arrival_time(raw: bytes, now: datetime) -> datetime | None:
    """When the message ``raw`` arrived, in UTC; None when no header says so believably.

    A stamp later than ``now`` (a server clock running ahead) counts as ``now``. Never raises.
    """
    headers = _headers(raw[:MAX_HEADER_BYTES])
    received = [value for name, value in headers if name == "received"]
    dates = [value for name, value in headers if name == "date"]
    candidates = []
    if received:
        # The stamp follows the last ';' of the header (RFC 5321 section 4.4).
        candidates.append(received[0].rpartition(";")[2])
    if dates:
        candidates.append(dates[0])
    for text in candidates:
        moment = _parse(text)
        if moment is None:
            continue
        if moment > now:
            return now.astimezone(UTC)
        if now - moment > OLDEST:
            continue
        return moment
    return None


def _headers(raw: bytes) -> list[tuple[str, str]]:
    """(lowercase name, unfolded value) of each header field, in order."""
    end = _HEADER_END.search(raw)
    block = raw[: end.start()] if end else raw
    fields: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip().decode("latin-1"))
            continue
        match = _FIELD.match(line)
        if match:
            fields.append((match[1].decode("ascii").lower(), match[2].decode("latin-1").strip()))
    return fields


def _parse(text: str) -> datetime | None:
    try:
        moment = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, origin unknown (RFC 5322 section 3.3)
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
