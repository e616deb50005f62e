"""What happens to the demo's prospects: who replies, who is away, whose address bounces, who
asks to be removed, and the raw messages their mail servers would send back.

The messages are built as real RFC 5322 bytes (a DSN for the bounce, an auto-reply with a
return date, replies quoting the email they answer) and go through the same classification
and actions as mail the IMAP watcher reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from enum import StrEnum

from sequencer.core.prospects import ProspectRow
from sequencer.mail.capture import Captured


class Reaction(StrEnum):
    REPLY = "reply"
    OUT_OF_OFFICE = "out-of-office"
    BOUNCE = "bounce"
    UNSUBSCRIBE = "unsubscribe"


@dataclass(frozen=True)
class Beat:
    """``prospect`` reacts ``delay`` after the ``after_emails``-th email reached them."""

    prospect: str
    after_emails: int
    delay: timedelta
    reaction: Reaction
    text: str = ""
    #: Out-of-office: how many days after the email they are back.
    away_days: int = 0


#: The inbound lead: asks for a demo on the website on the first Tuesday evening.
DEMO_REQUEST = ProspectRow(
    line=1,
    email="rosa.diaz@cyberdyne.example",
    fields={
        "email": "rosa.diaz@cyberdyne.example",
        "first_name": "Rosa",
        "last_name": "Diaz",
        "company": "Cyberdyne Freight",
        "title": "Director of Operations",
        "timezone": "America/New_York",
        "use_case": "forecasting pick-and-pack labor for peak season",
    },
)
#: When (days after the start, hour in New York) the demo request comes in: after hours.
DEMO_REQUEST_AT = (1, 21, 47)

STORY: tuple[Beat, ...] = (
    Beat(
        "amara.okafor@stark.example",
        1,
        timedelta(minutes=2),
        Reaction.BOUNCE,
        "550 5.1.1 <amara.okafor@stark.example>: Recipient address rejected: User unknown",
    ),
    Beat(
        "priya.nair@umbrella.example",
        1,
        timedelta(minutes=1),
        Reaction.OUT_OF_OFFICE,
        away_days=9,
    ),
    Beat(
        "marcus.lee@initech.example",
        2,
        timedelta(hours=3, minutes=12),
        Reaction.REPLY,
        "Funny timing: we are rebuilding our labor plan for Q3 right now. The case study was "
        "useful. Could you do a call next Tuesday afternoon?",
    ),
    Beat(
        "ben.carter@acme-freight.example",
        2,
        timedelta(hours=20),
        Reaction.UNSUBSCRIBE,
        "Please remove me from your mailing list. Not interested.",
    ),
    Beat(
        "dana.kim@globex.example",
        4,
        timedelta(hours=2, minutes=40),
        Reaction.REPLY,
        "OK, you have been persistent and the peak-season teardown got my attention. "
        "Send me a few times for next week.",
    ),
    Beat(
        DEMO_REQUEST.email,
        1,
        timedelta(minutes=25),
        Reaction.REPLY,
        "Thanks for the quick answer! Thursday at 2pm Eastern works for me.",
    ),
)


def _quote(original: EmailMessage) -> str:
    body = original.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    sender = str(original.get("From", ""))
    when = str(original.get("Date", ""))
    quoted = "\n".join(f"> {line}" if line else ">" for line in text.splitlines())
    return f"On {when}, {sender} wrote:\n{quoted}\n"


def _base(original: Captured, sender: str, subject: str, at: datetime) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = str(original.message.get("From", original.mail_from))
    message["Subject"] = subject
    message["Date"] = format_datetime(at)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].rstrip(">"))
    return message


def _display(row_name: str, email: str) -> str:
    return f"{row_name} <{email}>" if row_name else email


def reply(original: Captured, name: str, text: str, at: datetime) -> bytes:
    """A person's reply to ``original``, quoting it, threaded by In-Reply-To/References."""
    parsed = original.message
    subject = str(parsed.get("Subject", ""))
    message = _base(
        original,
        _display(name, original.recipients[0]),
        subject if subject.lower().startswith("re:") else f"Re: {subject}",
        at,
    )
    message_id = original.message_id
    message["In-Reply-To"] = message_id
    references = str(parsed.get("References", "")).split()
    message["References"] = " ".join([*references, message_id])
    message.set_content(f"{text}\n\n{_quote(parsed)}")
    return bytes(message)


def out_of_office(original: Captured, name: str, back: datetime, at: datetime) -> bytes:
    """An automatic reply saying the person is away until ``back``."""
    parsed = original.message
    message = _base(
        original,
        _display(name, original.recipients[0]),
        f"Automatic reply: {parsed.get('Subject', '')}",
        at,
    )
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"
    message["In-Reply-To"] = original.message_id
    message.set_content(
        "Thank you for your message. I am out of the office with limited access to email "
        f"until {back:%A, %d %B %Y}. I will reply when I am back.\n\n"
        f"{name.split()[0] if name else 'I'}\n"
    )
    return bytes(message)


def bounce(original: Captured, diagnostic: str, at: datetime) -> bytes:
    """The recipient's server reports the address does not exist: an RFC 3464 delivery status
    notification carrying the returned message's headers."""
    recipient = original.recipients[0]
    domain = recipient.rpartition("@")[2]
    _, our_address = parseaddr(str(original.message.get("From", original.mail_from)))
    parts = diagnostic.split()
    status = parts[1] if len(parts) > 1 and parts[1][:1].isdigit() else "5.0.0"
    returned = original.data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    boundary = "dsn-" + hashlib.sha256(f"{recipient} {at}".encode()).hexdigest()[:20]
    text = f"""\
From: Mail Delivery System <MAILER-DAEMON@mx.{domain}>
To: {our_address}
Subject: Undelivered Mail Returned to Sender
Date: {format_datetime(at)}
Message-ID: {make_msgid(domain=f"mx.{domain}")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.{domain}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{recipient}>: host mx.{domain} said: {diagnostic}

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.{domain}
Arrival-Date: {format_datetime(at)}

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822; {recipient}
Action: failed
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--{boundary}
Content-Type: text/rfc822-headers

{returned.replace(chr(13), "")}

--{boundary}--
"""
    return text.replace("\n", "\r\n").encode("utf-8")


def render(beat: Beat, original: Captured, name: str, at: datetime) -> bytes:
    """The raw message for ``beat``, answering ``original`` at simulated time ``at``."""
    if beat.reaction is Reaction.BOUNCE:
        return bounce(original, beat.text, at)
    if beat.reaction is Reaction.OUT_OF_OFFICE:
        return out_of_office(original, name, at + timedelta(days=beat.away_days), at)
    return reply(original, name, beat.text, at)
