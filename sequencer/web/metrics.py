"""``/metrics``: the engine's figures in the Prometheus text format (version 0.0.4).

Everything is read from the database at scrape time, so every process (``sequencer run``,
any number of workers) is counted, and a counter survives restarts. Counters only grow
(sends, replies, bounces, unsubscribes are never deleted); gauges are states right now.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping

from starlette.requests import Request
from starlette.responses import Response

from sequencer.core.errors import DatabaseError
from sequencer.core.inbound import InboundKind
from sequencer.core.states import EnrollmentState, SuppressionReason, TouchState
from sequencer.store import metrics as mq
from sequencer.web.service import Service

log = logging.getLogger("sequencer.web")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds (seconds) of the reply-to-stop histogram: "stopped within a minute" is the
#: promise, and hours show a watcher that was down.
REPLY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0)


class Exposition:
    """Builds the text: each family's HELP and TYPE once, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        rendered = ""
        if labels:
            rendered = "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"
        self.lines.append(f"{name}{rendered} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text)
        self.sample(name, value)

    def by_label(
        self,
        name: str,
        help_text: str,
        label: str,
        values: Mapping[str, int],
        known: Iterable[str] = (),
    ) -> None:
        """A gauge with one sample per label value; known values appear even at zero, so a
        series does not vanish when its last row changes state."""
        self.family(name, "gauge", help_text)
        for key in sorted({*known, *values}):
            self.sample(name, values.get(key, 0), {label: key})

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    out = Exposition()
    try:
        engine = await service.schema_current()
        async with engine.db.transaction() as s:
            counts = await mq.counts(s, engine.now())
            waits = [w async for w in mq.reply_waits(s)]
    except DatabaseError as exc:
        log.error("metrics: %s", exc)
        out.one("sequencer_up", "gauge", "1 when the database could be read", 0)
        return Response(out.text(), media_type=CONTENT_TYPE)
    out.one("sequencer_up", "gauge", "1 when the database could be read", 1)
    emails = counts.emails
    out.one(
        "sequencer_emails_sent_total",
        "counter",
        "Emails accepted by the SMTP server",
        emails.get(TouchState.SENT.value, 0),
    )
    out.one(
        "sequencer_emails_failed_total",
        "counter",
        "Emails that could not be sent (permanent rejection, or retries used up)",
        emails.get(TouchState.FAILED.value, 0),
    )
    out.one(
        "sequencer_emails_unknown",
        "gauge",
        "Emails whose delivery could not be known; a person should look (sequencer status)",
        emails.get(TouchState.UNKNOWN.value, 0),
    )
    out.one(
        "sequencer_replies_total",
        "counter",
        "Replies from prospects that stopped their sequences",
        counts.replies,
    )
    out.one(
        "sequencer_bounces_total",
        "counter",
        "Hard bounces that stopped a sequence and suppressed the address",
        counts.bounces,
    )
    out.one(
        "sequencer_unsubscribes_total",
        "counter",
        "Addresses suppressed because the person asked (link or email)",
        counts.suppressions.get(SuppressionReason.UNSUBSCRIBED.value, 0),
    )
    out.family(
        "sequencer_queue_depth",
        "gauge",
        "Emails waiting to go out: due (not yet claimed), queued, sending",
    )
    out.sample("sequencer_queue_depth", counts.due, {"stage": "due"})
    for stage in (TouchState.QUEUED, TouchState.SENDING):
        out.sample("sequencer_queue_depth", emails.get(stage.value, 0), {"stage": stage.value})
    out.by_label(
        "sequencer_email_touches",
        "Email touches by state",
        "state",
        emails,
        [s.value for s in TouchState if s is not TouchState.DONE],
    )
    out.by_label(
        "sequencer_enrollments",
        "Enrollments by state",
        "state",
        counts.enrollments,
        [s.value for s in EnrollmentState],
    )
    out.by_label(
        "sequencer_inbound_messages",
        "Inbound messages seen, by kind",
        "kind",
        counts.inbound,
        [k.value for k in InboundKind],
    )
    out.by_label(
        "sequencer_suppressions",
        "Suppressed addresses and domains, by reason",
        "reason",
        counts.suppressions,
        [r.value for r in SuppressionReason],
    )
    out.one("sequencer_open_tasks", "gauge", "Rep tasks waiting to be done", counts.open_tasks)
    _histogram(
        out,
        "sequencer_reply_to_stop_seconds",
        "Time from a reply's arrival in the mailbox to the stop of its sequences",
        waits,
    )
    return Response(out.text(), media_type=CONTENT_TYPE)


def _histogram(out: Exposition, name: str, help_text: str, values: list[float]) -> None:
    out.family(name, "histogram", help_text)
    per_bucket = [0] * (len(REPLY_BUCKETS) + 1)
    for value in values:
        per_bucket[bisect_left(REPLY_BUCKETS, value)] += 1
    running = 0
    for bound, count in zip(REPLY_BUCKETS, per_bucket, strict=False):
        running += count
        out.sample(f"{name}_bucket", running, {"le": _number(bound)})
    out.sample(f"{name}_bucket", len(values), {"le": "+Inf"})
    out.sample(f"{name}_sum", math.fsum(values))
    out.sample(f"{name}_count", len(values))


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")
