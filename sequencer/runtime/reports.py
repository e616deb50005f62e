"""Read-only views for people: status, a prospect's timeline, a rep's task list."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sequencer.core.errors import NotFound
from sequencer.core.scheduling import schedule_zone
from sequencer.core.states import TOUCH_PENDING, EnrollmentState, EventKind, TaskState
from sequencer.runtime.engine import Engine
from sequencer.store import enrollments as eq
from sequencer.store import events as evq
from sequencer.store import mailboxes as mq
from sequencer.store import prospects as pq
from sequencer.store import touches as tq
from sequencer.store.models import Prospect, Task


@dataclass
class Status:
    enrollments: dict[str, dict[str, int]]  # sequence -> state -> count
    due_next_hour: list[tuple[str, str, int]]  # (sequence, channel, count)
    overdue: int
    attention: list[dict[str, Any]]  # failed / unknown touches
    open_tasks: int
    overdue_tasks: int
    mailboxes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enrollments": self.enrollments,
            "due_next_hour": [
                {"sequence": s, "channel": c, "count": n} for s, c, n in self.due_next_hour
            ],
            "overdue_touches": self.overdue,
            "needs_attention": self.attention,
            "open_tasks": self.open_tasks,
            "overdue_tasks": self.overdue_tasks,
            "mailboxes": self.mailboxes,
        }


async def status(engine: Engine) -> Status:
    now = engine.now()
    async with engine.db.transaction() as s:
        counts: dict[str, dict[str, int]] = {}
        for name, state, count in await evq.enrollment_counts(s):
            counts.setdefault(name, {})[state] = count
        due = await evq.touches_due_between(s, now, now + timedelta(hours=1))
        overdue = await evq.overdue_count(s, now - timedelta(minutes=5))
        attention = [
            {
                "touch": touch.id,
                "state": touch.state,
                "sequence": sequence,
                "step": touch.step_id,
                "email": prospect.email,
                "error": touch.last_error,
                "at": touch.updated_at.isoformat(),
            }
            for touch, prospect, sequence in await evq.touches_needing_attention(s)
        ]
        tasks = await tq.list_tasks(s)
        states = {m.address: m for m in await mq.all_mailbox_states(s)}
        config = engine.catalog.config
        addresses = [b.address for b in config.mailboxes] if config else []
        addresses += [a for a in states if a not in addresses]
        mailboxes = []
        for address in addresses:
            row = states.get(address)
            box = config.mailbox(address) if config else None
            paused = (
                row.paused_until if row and row.paused_until and row.paused_until > now else None
            )
            mailboxes.append(
                {
                    "address": address,
                    "configured": box is not None,
                    "healthy": row.healthy if row else True,
                    "paused_until": paused.isoformat() if paused else None,
                    "note": row.status_note if row else None,
                    "sent_24h": await mq.mailbox_send_count(s, address, now),
                    "daily_cap": box.limits.daily_cap if box else None,
                }
            )
    return Status(
        counts,
        due,
        overdue,
        attention,
        open_tasks=len(tasks),
        overdue_tasks=sum(1 for task, _, _ in tasks if task.due_at < now),
        mailboxes=mailboxes,
    )


@dataclass
class TimelineEntry:
    at: datetime  # in the prospect's zone
    kind: str
    sequence: str | None
    text: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timeline:
    prospect: Prospect
    zone: ZoneInfo
    entries: list[TimelineEntry]
    enrollments: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        p = self.prospect
        return {
            "prospect": {
                "email": p.email,
                "first_name": p.first_name,
                "last_name": p.last_name,
                "company": p.company,
                "timezone": self.zone.key,
            },
            "enrollments": self.enrollments,
            "events": [
                {
                    "at": e.at.isoformat(),
                    "kind": e.kind,
                    "sequence": e.sequence,
                    "text": e.text,
                    **({"data": e.data} if e.data else {}),
                }
                for e in self.entries
            ],
        }


def _attempt(data: dict[str, Any]) -> str:
    if "attempt" in data and "total" in data:
        return f"attempt {data['attempt']} of {data['total']}"
    return ""


def _when(iso: str | None, zone: ZoneInfo) -> str:
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone(zone).strftime("%a %d %b %H:%M")


def describe_event(kind: str, data: dict[str, Any], zone: ZoneInfo) -> str:
    """One line a person can read: "sent attempt 3 of 8 (value-1, case study)"."""
    attempt = _attempt(data)
    step = data.get("step")
    if kind == EventKind.ENROLLED:
        return f"enrolled by {data.get('owner')}, sending from {data.get('mailbox')}"
    if kind == EventKind.SENT:
        template = f", {data['template']}" if data.get("template") else ""
        return f"sent {attempt} ({step}{template})"
    if kind == EventKind.TASK_CREATED:
        due = data.get("due")
        return (
            f"{data.get('channel')} task, {attempt}: {data.get('title')} (due {_when(due, zone)})"
        )
    if kind == EventKind.TASK_DONE:
        note = f"; {data['note']}" if data.get("note") else ""
        return f"{data.get('channel')} done, {attempt}: {data.get('outcome')}{note}"
    if kind == EventKind.TASK_EXPIRED:
        waited = data.get("expired_after")
        return f"{data.get('channel')} task not done in {waited}; moved on ({attempt})"
    if kind == EventKind.SKIPPED:
        return f"skipped {attempt} ({step}): {data.get('reason')}"
    if kind == EventKind.PAUSED:
        until = data.get("until")
        when = f" until {_when(until, zone)}" if until else " until resumed"
        return f"paused{when} ({data.get('reason', 'manual')})"
    if kind == EventKind.REPLIED:
        template = f", {data['template']}" if data.get("template") else ""
        earned = f" to {attempt} ({step}{template})" if attempt else ""
        text = f': "{data["text"][:80]}"' if data.get("text") else ""
        return f"replied{earned}{text}"
    if kind == EventKind.OUT_OF_OFFICE:
        back = f", back {data['return_date']}" if data.get("return_date") else ""
        return f"out of office{back}"
    if kind == EventKind.BOUNCED:
        return f"bounced: {data.get('reason')}"
    if kind == EventKind.UNSUBSCRIBED:
        return f"asked to unsubscribe ({data.get('how', 'link')})"
    if kind == EventKind.DEFERRED:
        return f"delivery deferred ({step}): {data.get('reason')}"
    if kind == EventKind.UNKNOWN:
        return f"delivery unknown ({step}): {data.get('reason')}; policy {data.get('policy')}"
    if kind == EventKind.FAILED:
        return f"failed ({step}): {data.get('reason')}"
    if kind == EventKind.STOPPED:
        return f"stopped: {data.get('reason')}"
    if kind == EventKind.SEQUENCE_CHANGED:
        removed = data.get("removed_pending") or []
        return "sequence edited" + (
            f"; pending step {', '.join(removed)} removed" if removed else ""
        )
    parts = [kind.replace("_", " ")]
    if attempt:
        parts.append(attempt)
    return " ".join(parts)


async def timeline(engine: Engine, email: str) -> Timeline:
    async with engine.db.transaction() as s:
        prospect = await pq.find_prospect(s, email.strip().lower())
        if prospect is None:
            raise NotFound(f"no prospect {email}; enroll them first (`sequencer enroll`)")
        events = await evq.timeline(s, prospect.id)
        enrollments = await eq.enrollments_of(s, prospect.id)
        names = await eq.sequence_names(s, [e.sequence_id for e in enrollments])
        by_enrollment = {e.id: names[e.sequence_id] for e in enrollments}
        pending = await tq.pending_touches(s, [e.id for e in enrollments])
    zone = _prospect_zone(engine, prospect, [by_enrollment[e.id] for e in enrollments])
    entries = [
        TimelineEntry(
            event.at.astimezone(zone),
            event.kind,
            by_enrollment.get(event.enrollment_id) if event.enrollment_id else None,
            describe_event(event.kind, event.data or {}, zone),
            event.data or {},
        )
        for event in events
    ]
    pending_by = {t.enrollment_id: t for t in pending}
    summaries = []
    for enrollment in enrollments:
        touch = pending_by.get(enrollment.id)
        summaries.append(
            {
                "sequence": by_enrollment[enrollment.id],
                "state": enrollment.state,
                "stop_reason": enrollment.stop_reason,
                "owner": enrollment.owner,
                "mailbox": enrollment.mailbox,
                "paused_until": (
                    enrollment.paused_until.astimezone(zone).isoformat()
                    if enrollment.paused_until
                    else None
                ),
                "next": (
                    {
                        "step": touch.step_id,
                        "channel": touch.channel,
                        "attempt": touch.step_index + 1,
                        "due": touch.due_at.astimezone(zone).isoformat(),
                    }
                    if touch is not None
                    and touch.state in {st.value for st in TOUCH_PENDING}
                    and enrollment.state == EnrollmentState.ACTIVE.value
                    else None
                ),
            }
        )
    return Timeline(prospect, zone, entries, summaries)


def _prospect_zone(engine: Engine, prospect: Prospect, sequences: list[str]) -> ZoneInfo:
    for name in sequences:
        if name in engine.sequences:
            return schedule_zone(engine.sequences[name], prospect.timezone)
    try:
        return ZoneInfo(prospect.timezone or "UTC")
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class TaskLine:
    task: Task
    prospect: Prospect
    sequence: str

    def as_dict(self) -> dict[str, Any]:
        t, p = self.task, self.prospect
        return {
            "id": t.id,
            "owner": t.owner,
            "channel": t.channel,
            "title": t.title,
            "script": t.script,
            "due": t.due_at.isoformat(),
            "state": t.state,
            "prospect": p.email,
            "name": " ".join(x for x in (p.first_name, p.last_name) if x) or None,
            "company": p.company,
            "phone": (p.fields or {}).get("phone"),
            "sequence": self.sequence,
        }


async def task_list(
    engine: Engine, *, owner: str | None, due_before: datetime | None
) -> list[TaskLine]:
    async with engine.db.transaction() as s:
        rows = await tq.list_tasks(s, owner=owner, due_before=due_before, states=(TaskState.OPEN,))
        names = await eq.sequence_names(s, [e.sequence_id for _, _, e in rows])
    return [TaskLine(task, prospect, names[e.sequence_id]) for task, prospect, e in rows]
