"""A sequence's planned timeline for one prospect: due times, rotation and rendered touches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sequencer.core.calendar import HolidayCalendar, add_delay, plan_send_time
from sequencer.core.errors import TemplateError
from sequencer.core.model import Channel, Sequence, Step, Template, Threading
from sequencer.core.rotation import RotationAction, RotationChoice, choose_template
from sequencer.core.templates import Renderer, StepInfo, build_context

REPLY_PREFIX = "Re: "


@dataclass(frozen=True)
class PlannedTouch:
    """One step as it would happen: when, what, and (for emails) the rendered message."""

    step: Step
    attempt: int  # 1-based position in the sequence
    total: int
    due: datetime  # aware, in the prospect's zone
    channel: Channel
    template: str | None
    subject: str | None  # email subject, or the task's title
    body: str | None
    html: str | None = None
    thread: str | None = None  # id of the step whose thread this email replies in
    rotation: RotationChoice | None = None
    skipped: str | None = None  # why the step will not happen
    error: str | None = None  # why it could not be rendered

    def as_dict(self) -> dict[str, object]:
        return {
            "step": self.step.id,
            "attempt": self.attempt,
            "total": self.total,
            "channel": self.channel.value,
            "delay": str(self.step.delay),
            "due": self.due.isoformat(),
            "weekday": self.due.strftime("%a"),
            "template": self.template,
            "subject": self.subject,
            "body": self.body,
            "html": self.html,
            "thread": self.thread,
            "rotation": self.rotation.reason if self.rotation else None,
            "skipped": self.skipped,
            "error": self.error,
        }


def prospect_zone(sequence: Sequence, prospect: Mapping[str, str]) -> ZoneInfo:
    """The zone the sequence's schedule is read in for this prospect."""
    return ZoneInfo(sequence.schedule.zone_name_for(prospect.get("timezone") or None))


def plan_timeline(
    sequence: Sequence,
    templates: Mapping[str, Template],
    *,
    prospect: Mapping[str, str],
    sender: Mapping[str, str],
    start: datetime,
    unsubscribe_url: str,
    renderer: Renderer | None = None,
    received: Mapping[str, datetime] | None = None,
) -> list[PlannedTouch]:
    """Simulate the whole sequence from ``start`` as if every touch went out when due and
    nobody replied. Rotation never repeats a template (``received`` seeds the history)."""
    renderer = renderer or Renderer()
    zone = prospect_zone(sequence, prospect)
    schedule = sequence.schedule
    holidays = HolidayCalendar(schedule.holidays)
    history: dict[str, datetime] = dict(received or {})
    previous: list[datetime] = []
    touches: list[PlannedTouch] = []
    cursor = start.astimezone(zone)
    thread_subject: str | None = None
    thread_step: str | None = None
    total = len(sequence.steps)
    seed_base = prospect.get("email", "preview")
    for index, step in enumerate(sequence.steps):
        earliest = add_delay(cursor, step.delay, zone, schedule.window, holidays)
        due = plan_send_time(
            earliest,
            zone=zone,
            window=schedule.window,
            holidays=holidays,
            previous=previous,
            limits=sequence.limits,
            anytime=step.anytime,
        )
        template_name = step.template
        rotation = None
        if step.rotate:
            rotation = choose_template(
                sequence.pools[step.rotate],
                seed=f"{seed_base}:{sequence.name}:{step.id}",
                received=history,
                allow_reuse=sequence.allow_reuse,
            )
            template_name = rotation.template
            if rotation.action is not RotationAction.SEND:
                touches.append(
                    PlannedTouch(
                        step,
                        index + 1,
                        total,
                        due,
                        step.channel,
                        None,
                        None,
                        None,
                        rotation=rotation,
                        skipped=rotation.reason,
                    )
                )
                if rotation.action is RotationAction.STOP:
                    break
                continue
        context = build_context(
            prospect=prospect,
            sender=sender,
            step=StepInfo(step.id, index + 1, total, step.channel.value),
            unsubscribe_url=unsubscribe_url,
        )
        touch = _render(step, template_name, templates, renderer, context, sequence.path)
        subject, thread = touch.subject, None
        if step.channel is Channel.EMAIL and touch.error is None:
            if step.thread is Threading.REPLY and thread_subject is not None:
                subject, thread = _reply_subject(thread_subject), thread_step
            else:
                thread_subject, thread_step = touch.subject, step.id
        touches.append(
            PlannedTouch(
                step,
                index + 1,
                total,
                due,
                step.channel,
                template_name,
                subject,
                touch.body,
                touch.html,
                thread,
                rotation,
                None,
                touch.error,
            )
        )
        if template_name is not None:
            history[template_name] = due
        previous.append(due)
        cursor = due
    return touches


@dataclass(frozen=True)
class _Rendered:
    subject: str | None
    body: str | None
    html: str | None = None
    error: str | None = None


def _render(
    step: Step,
    template_name: str | None,
    templates: Mapping[str, Template],
    renderer: Renderer,
    context: Mapping[str, object],
    sequence_path: str,
) -> _Rendered:
    where = f"{sequence_path}:{step.line}"
    try:
        if step.channel is Channel.EMAIL:
            if template_name is None or template_name not in templates:
                return _Rendered(None, None, error=f"{where}: template {template_name!r} missing")
            message = renderer.render(templates[template_name], context)
            return _Rendered(message.subject, message.text, message.html)
        title = renderer.render_text(step.title, context, where=where) if step.title else None
        if step.script is not None:
            body: str | None = renderer.render_text(step.script, context, where=where)
        elif template_name is not None and template_name in templates:
            template = templates[template_name]
            body = renderer.render(template, context).text
            title = title or template.title or None
        else:
            body = None
        return _Rendered(title or _default_title(step.channel, context), body)
    except TemplateError as exc:
        return _Rendered(None, None, error=str(exc))


def _default_title(channel: Channel, context: Mapping[str, object]) -> str:
    prospect = context.get("prospect")
    who = ""
    for field in ("name", "email"):
        try:
            value = getattr(prospect, field)
        except (AttributeError, KeyError, TemplateError):
            continue
        if isinstance(value, str) and value:
            who = value
            break
    verb = {Channel.CALL: "Call", Channel.LINKEDIN: "LinkedIn:", Channel.TASK: "Task for"}
    return f"{verb.get(channel, 'Task for')} {who}".strip()


def _reply_subject(subject: str) -> str:
    return subject if subject.lower().startswith("re:") else REPLY_PREFIX + subject
