"""The report behind `sequencer report`: what each sequence, step and template earned, which
attempt won the replies, and what needs a human. Read-only; every count comes from a GROUP BY
in ``store/analytics.py``; the renderers (terminal, HTML) only format this model."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sequencer.core.errors import NotFound
from sequencer.core.model import Sequence as SequenceModel
from sequencer.core.problems import did_you_mean
from sequencer.core.states import EnrollmentState, EventKind, TouchState
from sequencer.runtime.engine import Engine
from sequencer.store import analytics as aq

#: Steps that went out (or were done) are read from these touch states.
_PENDING = {TouchState.SCHEDULED.value, TouchState.QUEUED.value, TouchState.SENDING.value}
_SIGNALS = {
    EventKind.REPLIED.value: "replied",
    EventKind.BOUNCED.value: "bounced",
    EventKind.UNSUBSCRIBED.value: "unsubscribed",
    EventKind.OUT_OF_OFFICE.value: "out_of_office",
}
_SMTP_REFUSAL = re.compile(r"^5\d\d\b")
VALUE_ADD_TAG = "value-add"
#: How many idle leads and stuck touches the report lists (all are counted).
LISTED = 100


def rate(part: int, whole: int) -> float | None:
    """``part / whole``, or None when there is nothing to divide by (not 0%: unknown)."""
    return part / whole if whole else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True)
class Signals:
    """What came back: each counted once per enrollment, out-of-office every time."""

    replied: int = 0
    bounced: int = 0
    unsubscribed: int = 0
    out_of_office: int = 0

    def plus(self, kind: str, count: int) -> Signals:
        values = {**self.__dict__}
        values[kind] += count
        return Signals(**values)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StepFigures:
    """One step of a sequence: how many went out, what came back, what is left."""

    step: str
    position: int  # 1-based place in the sequence
    channel: str  # email, call, linkedin, task
    content: str  # the template, or "rotate: POOL", or "" when unknown
    in_sequence: bool  # False: removed from the sequence file since
    sent: int  # emails that went out
    done: int  # tasks the rep did (or that moved on by themselves)
    signals: Signals
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    cancelled: int = 0
    pending: int = 0

    @property
    def reply_rate(self) -> float | None:
        return rate(self.signals.replied, self.sent)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "position": self.position,
            "channel": self.channel,
            "content": self.content,
            "in_sequence": self.in_sequence,
            "sent": self.sent,
            "done": self.done,
            **self.signals.as_dict(),
            "reply_rate": _rounded(self.reply_rate),
            "failed": self.failed,
            "unknown": self.unknown,
            "skipped": self.skipped,
            "cancelled": self.cancelled,
            "pending": self.pending,
        }


@dataclass(frozen=True)
class AttemptFigure:
    attempt: int  # 1 = the first email of the enrollment
    replies: int


@dataclass(frozen=True)
class TemplateFigures:
    template: str
    title: str
    value_add: bool  # in a rotation pool, or tagged value-add
    sent: int
    replied: int

    @property
    def reply_rate(self) -> float | None:
        return rate(self.replied, self.sent)

    def as_dict(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "title": self.title,
            "value_add": self.value_add,
            "sent": self.sent,
            "replied": self.replied,
            "reply_rate": _rounded(self.reply_rate),
        }


def later_share(attempts: Iterable[AttemptFigure]) -> float | None:
    """The share of replies won by the second email or later."""
    rows = list(attempts)
    return rate(sum(a.replies for a in rows if a.attempt >= 2), sum(a.replies for a in rows))


@dataclass(frozen=True)
class SequenceFigures:
    name: str
    description: str
    archived: bool
    in_project: bool  # False: the file is gone; figures come from the database
    enrollments: int
    states: Mapping[str, int]  # active, paused, finished, stopped
    stop_reasons: Mapping[str, int]
    contacted: int  # enrollments that got at least one email
    sent: int  # emails sent
    signals: Signals
    steps: tuple[StepFigures, ...]
    replies_by_attempt: tuple[AttemptFigure, ...]
    unattributed: Signals = field(default_factory=Signals)  # before any email went out

    @property
    def reply_rate(self) -> float | None:
        """Replies per person emailed (not per email: one person replies once)."""
        return rate(self.signals.replied, self.contacted)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "archived": self.archived,
            "in_project": self.in_project,
            "enrollments": self.enrollments,
            "states": dict(self.states),
            "stop_reasons": dict(self.stop_reasons),
            "contacted": self.contacted,
            "sent": self.sent,
            **self.signals.as_dict(),
            "reply_rate": _rounded(self.reply_rate),
            "replies_by_attempt": [
                {"attempt": a.attempt, "replies": a.replies} for a in self.replies_by_attempt
            ],
            "replies_after_first_email": _rounded(later_share(self.replies_by_attempt)),
            "unattributed": self.unattributed.as_dict(),
            "steps": [s.as_dict() for s in self.steps],
        }


@dataclass(frozen=True)
class IdleLead:
    """A live enrollment with nothing planned and no stop reason: nobody is working it."""

    email: str
    name: str
    sequence: str
    state: str
    since: datetime
    last_step: str | None
    last_state: str | None
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "since": self.since.isoformat()}


@dataclass(frozen=True)
class StuckTouch:
    """A touch `failed` or `unknown`, with what a person should do about it."""

    touch: int
    state: str
    email: str
    sequence: str
    step: str
    error: str
    since: datetime
    mailbox: str
    message_id: str | None
    todo: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "since": self.since.isoformat()}


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    sequence: str | None  # the one asked for, or None for all
    sequences: tuple[SequenceFigures, ...]
    templates: tuple[TemplateFigures, ...]
    idle_total: int
    idle: tuple[IdleLead, ...]  # the oldest LISTED of them
    stuck_totals: Mapping[str, int]  # failed / unknown -> count
    stuck: tuple[StuckTouch, ...]  # the newest LISTED of them

    @property
    def replies_by_attempt(self) -> tuple[AttemptFigure, ...]:
        return _merge_attempts(a for q in self.sequences for a in q.replies_by_attempt)

    @property
    def replied(self) -> int:
        return sum(q.signals.replied for q in self.sequences)

    def as_dict(self) -> dict[str, Any]:
        attempts = self.replies_by_attempt
        return {
            "generated_at": self.generated_at.isoformat(),
            "sequence": self.sequence,
            "replied": self.replied,
            "replies_by_attempt": [{"attempt": a.attempt, "replies": a.replies} for a in attempts],
            "replies_after_first_email": _rounded(later_share(attempts)),
            "sequences": [q.as_dict() for q in self.sequences],
            "templates": [t.as_dict() for t in self.templates],
            "leads_not_worked": {
                "total": self.idle_total,
                "listed": [i.as_dict() for i in self.idle],
            },
            "needs_attention": {
                "failed": self.stuck_totals.get(TouchState.FAILED.value, 0),
                "unknown": self.stuck_totals.get(TouchState.UNKNOWN.value, 0),
                "listed": [s.as_dict() for s in self.stuck],
            },
        }


def _merge_attempts(rows: Iterable[AttemptFigure]) -> tuple[AttemptFigure, ...]:
    counts: dict[int, int] = defaultdict(int)
    for row in rows:
        counts[row.attempt] += row.replies
    return tuple(AttemptFigure(a, counts[a]) for a in sorted(counts))


# --- building -----------------------------------------------------------------------------


async def build_report(engine: Engine, sequence: str | None = None) -> Report:
    """The report for one sequence (by name) or for every sequence that has enrollments.
    Raises ``NotFound`` (with did-you-mean) for a name neither the project nor the database
    knows."""
    now = engine.now()
    stuck_totals: dict[str, int] = {}
    async with engine.db.transaction() as s:
        await aq.settle_in(s)
        known = {k.name: k for k in await aq.known_sequences(s)}
        record = None
        if sequence is not None:
            record = known.get(sequence)
            if record is None and sequence not in engine.sequences:
                names = sorted({*known, *engine.sequences})
                hint = did_you_mean(sequence, names) or (
                    f"known sequences: {', '.join(names)}" if names else "none enrolled yet"
                )
                raise NotFound(f"no sequence named {sequence!r} ({hint})")
        if sequence is not None and record is None:
            # In the project but never synced or enrolled: a report of zeros, steps listed.
            outcomes: list[tuple[int, str, str | None, int]] = []
            contacts: dict[int, int] = {}
            touches: list[aq.TouchCount] = []
            signals: list[aq.SignalCount] = []
            idle_total, idle, stuck = 0, list[aq.IdleLead](), list[aq.StuckTouch]()
        else:
            only = record.id if record else None
            outcomes = await aq.enrollment_outcomes(s, only)
            contacts = await aq.contacted(s, only)
            touches = await aq.touch_counts(s, only)
            signals = await aq.signal_counts(s, only)
            idle_total, idle = await aq.idle_leads(s, now, only, LISTED)
            stuck = await aq.stuck_touches(s, only, LISTED)
            for t in touches:
                if t.state in aq.NEEDS_A_HUMAN:
                    stuck_totals[t.state] = stuck_totals.get(t.state, 0) + t.count
    # The heavy queries group by sequence id; names are looked up here, once.
    ids = {k.name: k.id for k in known.values()}
    by_id = {k.id: k.name for k in known.values()}
    names = [sequence] if sequence else sorted({by_id[i] for i, *_ in outcomes})
    figures = tuple(
        _sequence_figures(
            engine,
            name,
            known.get(name),
            [o for o in outcomes if o[0] == ids.get(name)],
            contacts.get(ids.get(name, -1), 0),
            [t for t in touches if t.sequence == ids.get(name)],
            [g for g in signals if g.sequence == ids.get(name)],
        )
        for name in names
    )
    return Report(
        generated_at=now,
        sequence=sequence,
        sequences=figures,
        templates=_template_figures(engine, touches, signals),
        idle_total=idle_total,
        idle=tuple(_idle(lead) for lead in idle),
        stuck_totals=stuck_totals,
        stuck=tuple(_stuck(row) for row in stuck),
    )


def _sequence_figures(
    engine: Engine,
    name: str,
    known: aq.KnownSequence | None,
    outcomes: list[tuple[int, str, str | None, int]],
    contacted: int,
    touches: list[aq.TouchCount],
    signals: list[aq.SignalCount],
) -> SequenceFigures:
    model = engine.sequences.get(name)
    states: dict[str, int] = {state.value: 0 for state in EnrollmentState}
    reasons: dict[str, int] = defaultdict(int)
    for _, state, reason, count in outcomes:
        states[state] = states.get(state, 0) + count
        if reason:
            reasons[reason] += count
    totals = Signals()
    unattributed = Signals()
    for g in signals:
        totals = totals.plus(_SIGNALS[g.kind], g.count)
        if g.step is None:
            unattributed = unattributed.plus(_SIGNALS[g.kind], g.count)
    attempts = _merge_attempts(
        AttemptFigure(g.attempt, g.count)
        for g in signals
        if g.kind == EventKind.REPLIED.value and g.attempt is not None
    )
    steps = _step_figures(model, known, touches, signals)
    return SequenceFigures(
        name=name,
        description=model.description if model else "",
        archived=bool(known and known.archived_at),
        in_project=model is not None,
        enrollments=sum(states.values()),
        states=states,
        stop_reasons=dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        contacted=contacted,
        sent=sum(s.sent for s in steps),
        signals=totals,
        steps=steps,
        replies_by_attempt=attempts,
        unattributed=unattributed,
    )


def _step_figures(
    model: SequenceModel | None,
    known: aq.KnownSequence | None,
    touches: list[aq.TouchCount],
    signals: list[aq.SignalCount],
) -> tuple[StepFigures, ...]:
    """Steps in the sequence's order (the file's, else the stored version's), then steps
    removed since, by where they stood."""
    defined = {st.id: st for st in model.steps} if model else {}
    stored = set(known.steps if known else ())
    order = list(defined) if model else list(known.steps if known else ())
    seen_at: dict[str, int] = {}
    channels: dict[str, str] = {}
    for t in touches:
        seen_at[t.step] = min(seen_at.get(t.step, t.step_index), t.step_index)
        channels[t.step] = t.channel
    order += sorted((s for s in seen_at if s not in order), key=lambda s: (seen_at[s], s))
    result = []
    for position, step_id in enumerate(order, start=1):
        by_state: dict[str, int] = defaultdict(int)
        for t in touches:
            if t.step == step_id:
                by_state[t.state] += t.count
        got = Signals()
        for g in signals:
            if g.step == step_id:
                got = got.plus(_SIGNALS[g.kind], g.count)
        step = defined.get(step_id)
        if step is not None:
            channel = step.channel.value
            content = f"rotate: {step.rotate}" if step.rotate else (step.template or "")
        else:
            channel, content = channels.get(step_id, ""), ""
        result.append(
            StepFigures(
                step=step_id,
                position=position,
                channel=channel,
                content=content,
                in_sequence=step is not None or (model is None and step_id in stored),
                sent=by_state[TouchState.SENT.value],
                done=by_state[TouchState.DONE.value],
                signals=got,
                failed=by_state[TouchState.FAILED.value],
                unknown=by_state[TouchState.UNKNOWN.value],
                skipped=by_state[TouchState.SKIPPED.value],
                cancelled=by_state[TouchState.CANCELLED.value],
                pending=sum(by_state[p] for p in _PENDING),
            )
        )
    return tuple(result)


def _value_add_templates(engine: Engine) -> set[str]:
    pooled = {
        name
        for sequence in engine.sequences.values()
        for pool in sequence.pools.values()
        for name in pool.templates
    }
    tagged = {name for name, t in engine.catalog.templates.items() if VALUE_ADD_TAG in t.tags}
    return pooled | tagged


def _template_figures(
    engine: Engine, touches: list[aq.TouchCount], signals: list[aq.SignalCount]
) -> tuple[TemplateFigures, ...]:
    """Every email template that went out, best reply rate first."""
    sent: dict[str, int] = defaultdict(int)
    replied: dict[str, int] = defaultdict(int)
    for t in touches:
        if t.channel == "email" and t.template and t.state == TouchState.SENT.value:
            sent[t.template] += t.count
    for g in signals:
        if g.kind == EventKind.REPLIED.value and g.template:
            replied[g.template] += g.count
    value_add = _value_add_templates(engine)
    rows = [
        TemplateFigures(
            template=name,
            title=(engine.catalog.templates[name].title if name in engine.catalog.templates else "")
            or name,
            value_add=name in value_add,
            sent=sent[name],
            replied=replied[name],
        )
        for name in sorted({*sent, *replied})
    ]
    return tuple(sorted(rows, key=lambda t: (-(t.reply_rate or 0.0), -t.sent, t.template)))


def _idle(lead: aq.IdleLead) -> IdleLead:
    if lead.state == EnrollmentState.PAUSED.value:
        why = "its pause ran out but it was never resumed"
    elif lead.last_state == TouchState.UNKNOWN.value:
        why = f"waits on {lead.last_step}, whose delivery is unknown (see below)"
    elif lead.last_step is None:
        why = "no touch was ever planned"
    else:
        why = f"its last touch ({lead.last_step}) is {lead.last_state}; nothing comes after it"
    name = " ".join(x for x in (lead.first_name, lead.last_name) if x)
    return IdleLead(
        lead.email,
        name,
        lead.sequence,
        lead.state,
        lead.since,
        lead.last_step,
        lead.last_state,
        why,
    )


def _stuck(row: aq.StuckTouch) -> StuckTouch:
    error = row.error or ""
    if row.state == TouchState.UNKNOWN.value:
        todo = (
            f"the connection dropped after the email was handed over: look for Message-ID "
            f"{row.message_id or '(none)'} in the Sent folder of {row.mailbox}, then "
            f"`sequencer touch settle {row.touch_id} --arrived` if it is there, `--resend` if "
            "not. `unknown_outcome: check_sent_folder` on the mailbox checks by itself"
        )
    elif _SMTP_REFUSAL.match(error):
        todo = "the server refused the address; it is suppressed. Find the right address"
    elif error.startswith("cannot render"):
        todo = "fix the template (`sequencer validate`, `sequencer preview`); the sequence moved on"
    elif error.startswith("gave up after"):
        todo = "the server kept deferring it: check the mailbox (`sequencer mailbox check`)"
    else:
        todo = f"see `sequencer timeline {row.email}`"
    return StuckTouch(
        row.touch_id,
        row.state,
        row.email,
        row.sequence,
        row.step,
        error,
        row.since,
        row.mailbox,
        row.message_id,
        todo,
    )
