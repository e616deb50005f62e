"""Plans the next touch of enrollments: picks the step and its template, writes touch and task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.config import ProjectConfig
from sequencer.core.errors import TemplateError
from sequencer.core.model import Channel, Step, Template
from sequencer.core.model import Sequence as SequenceModel
from sequencer.core.rotation import RotationAction, choose_template
from sequencer.core.scheduling import due_time, next_step
from sequencer.core.states import EnrollmentState, EventKind, StopReason, TaskState, TouchState
from sequencer.core.templates import Renderer, StepInfo, build_context
from sequencer.store import enrollments as enrollment_queries
from sequencer.store import touches as touch_queries
from sequencer.store.events import NewEvent, add_events
from sequencer.store.models import Enrollment, Prospect
from sequencer.store.prospects import prospect_fields

#: How far back touches count for the nuisance limits (a week plus slack for long gaps).
LIMIT_LOOKBACK = timedelta(days=15)
#: What "recently" means for "nobody at the same company got this template recently".
COMPANY_RECENT = timedelta(days=90)


@dataclass
class Plan:
    """What happens next for one enrollment."""

    enrollment: Enrollment
    prospect: Prospect
    step: Step | None = None  # None: nothing left, the enrollment finishes
    step_index: int = 0
    due: datetime | None = None
    template: str | None = None
    skipped: list[tuple[int, Step, str]] = field(default_factory=list)  # (index, step, reason)
    stop_reason: StopReason | None = None


class Planner:
    """Decides and records next touches. Used inside the caller's transaction."""

    def __init__(
        self,
        sequences: Mapping[str, SequenceModel],
        templates: Mapping[str, Template],
        config: ProjectConfig | None,
        renderer: Renderer | None = None,
    ) -> None:
        self.sequences = sequences
        self.templates = templates
        self.config = config
        self.renderer = renderer or Renderer()

    async def plan(
        self,
        session: AsyncSession,
        sequence: SequenceModel,
        items: Sequence[tuple[Enrollment, Prospect, datetime]],
        now: datetime,
        *,
        done: Mapping[int, Sequence[str]] | None = None,
    ) -> list[Plan]:
        """Plan and record the next touch for each ``(enrollment, prospect, after)``.

        ``after`` is when the previous touch completed (or the enrollment started); ``done``
        maps enrollment ids to their steps that already have a touch (default: read them)."""
        if not items:
            return []
        previous = await touch_queries.contact_times(
            session, [p.id for _, p, _ in items], min(a for _, _, a in items) - LIMIT_LOOKBACK
        )
        plans: list[Plan] = []
        for enrollment, prospect, after in items:
            if done is not None and enrollment.id in done:
                steps_done = list(done[enrollment.id])
            else:
                steps_done = [
                    t.step_id for t in await touch_queries.touches_of(session, enrollment.id)
                ]
            plan = await self._decide(
                session,
                sequence,
                enrollment,
                prospect,
                after,
                steps_done,
                previous.get(prospect.id, []),
            )
            plans.append(plan)
        await self._record(session, sequence, plans, now)
        return plans

    async def _decide(
        self,
        session: AsyncSession,
        sequence: SequenceModel,
        enrollment: Enrollment,
        prospect: Prospect,
        after: datetime,
        done: list[str],
        previous: list[datetime],
    ) -> Plan:
        plan = Plan(enrollment, prospect)
        while True:
            found = next_step(sequence, done)
            if found is None:
                return plan
            index, step = found
            template = step.template
            if step.rotate is not None:
                pool = sequence.pools[step.rotate]
                choice = choose_template(
                    pool,
                    seed=f"{enrollment.id}:{step.id}",
                    received=await touch_queries.received_templates(session, prospect.id),
                    company_recent=(
                        await touch_queries.company_templates(
                            session, prospect.domain, prospect.id, after - COMPANY_RECENT
                        )
                        if prospect.domain
                        else {}
                    ),
                    usage=await touch_queries.template_usage(session, pool.templates),
                    allow_reuse=sequence.allow_reuse,
                )
                if choice.action is RotationAction.STOP:
                    plan.skipped.append((index, step, choice.reason))
                    plan.stop_reason = StopReason.POOL_EXHAUSTED
                    return plan
                if choice.action is RotationAction.SKIP:
                    plan.skipped.append((index, step, choice.reason))
                    done.append(step.id)
                    continue
                template = choice.template
            plan.step, plan.step_index, plan.template = step, index, template
            plan.due = due_time(
                sequence,
                step,
                after=after,
                prospect_timezone=prospect.timezone,
                previous=previous,
            )
            return plan

    async def _record(
        self, session: AsyncSession, sequence: SequenceModel, plans: list[Plan], now: datetime
    ) -> None:
        touch_rows: list[dict[str, Any]] = []
        events: list[NewEvent] = []
        total = len(sequence.steps)
        for plan in plans:
            e, p = plan.enrollment, plan.prospect
            for index, step, reason in plan.skipped:
                touch_rows.append(
                    _touch_row(e, p, step, index, TouchState.SKIPPED, now, now, None, completed=now)
                )
                events.append(
                    NewEvent(
                        p.id,
                        EventKind.SKIPPED,
                        now,
                        e.id,
                        data={
                            "step": step.id,
                            "attempt": index + 1,
                            "total": total,
                            "reason": reason,
                        },
                    )
                )
            if plan.step is not None and plan.due is not None:
                touch_rows.append(
                    _touch_row(
                        e,
                        p,
                        plan.step,
                        plan.step_index,
                        TouchState.SCHEDULED,
                        plan.due,
                        now,
                        plan.template,
                    )
                )
        inserted: dict[tuple[int, str], int] = {}
        if touch_rows:
            ids = await touch_queries.insert_touches_keyed(session, touch_rows)
            inserted.update(ids)
        task_rows: list[dict[str, Any]] = []
        for plan in plans:
            e, p = plan.enrollment, plan.prospect
            if plan.stop_reason is not None:
                await enrollment_queries.set_state(
                    session, e.id, EnrollmentState.STOPPED, now, stop_reason=plan.stop_reason
                )
                events.append(
                    NewEvent(
                        p.id,
                        EventKind.STOPPED,
                        now,
                        e.id,
                        data={
                            "reason": plan.stop_reason.value,
                            "sequence": sequence.name,
                        },
                    )
                )
            elif plan.step is None:
                await enrollment_queries.set_state(session, e.id, EnrollmentState.FINISHED, now)
                events.append(
                    NewEvent(p.id, EventKind.FINISHED, now, e.id, data={"sequence": sequence.name})
                )
            elif plan.step.channel.is_task and (e.id, plan.step.id) in inserted:
                touch_id = inserted[(e.id, plan.step.id)]
                assert plan.due is not None
                title, script = self._render_task(sequence, plan)
                task_rows.append(
                    {
                        "touch_id": touch_id,
                        "enrollment_id": e.id,
                        "owner": e.owner,
                        "channel": plan.step.channel.value,
                        "title": title,
                        "script": script,
                        "due_at": plan.due,
                        "state": TaskState.OPEN.value,
                        "created_at": now,
                    }
                )
                events.append(
                    NewEvent(
                        p.id,
                        EventKind.TASK_CREATED,
                        now,
                        e.id,
                        touch_id,
                        data={
                            "step": plan.step.id,
                            "attempt": plan.step_index + 1,
                            "total": total,
                            "channel": plan.step.channel.value,
                            "title": title,
                            "due": plan.due.isoformat(),
                        },
                    )
                )
        await touch_queries.insert_tasks(session, task_rows)
        await add_events(session, events)

    def _render_task(self, sequence: SequenceModel, plan: Plan) -> tuple[str, str]:
        """The task's title and script, rendered for this prospect now."""
        assert plan.step is not None
        step, enrollment = plan.step, plan.enrollment
        sender = (
            self.config.sender_fields(enrollment.mailbox or enrollment.owner) if self.config else {}
        )
        context = build_context(
            prospect=prospect_fields(plan.prospect),
            sender=sender,
            step=StepInfo(step.id, plan.step_index + 1, len(sequence.steps), step.channel.value),
            unsubscribe_url="",
        )
        where = f"{sequence.path}:{step.line}"
        try:
            title = (
                self.renderer.render_text(step.title, context, where=where) if step.title else ""
            )
            if step.script is not None:
                script = self.renderer.render_text(step.script, context, where=where)
            elif step.template is not None and step.template in self.templates:
                template = self.templates[step.template]
                script = self.renderer.render(template, context).text
                title = title or template.title
            else:
                script = ""
        except TemplateError as exc:
            return _default_title(
                step.channel, plan.prospect
            ), f"(the script could not be rendered: {exc})"
        return (title or _default_title(step.channel, plan.prospect)).strip(), script


def _default_title(channel: Channel, prospect: Prospect) -> str:
    who = " ".join(p for p in (prospect.first_name, prospect.last_name) if p) or prospect.email
    at = f" ({prospect.company})" if prospect.company else ""
    verb = {Channel.CALL: "Call", Channel.LINKEDIN: "LinkedIn:", Channel.TASK: "Follow up with"}
    return f"{verb.get(channel, 'Follow up with')} {who}{at}"


def _touch_row(
    enrollment: Enrollment,
    prospect: Prospect,
    step: Step,
    index: int,
    state: TouchState,
    due: datetime,
    now: datetime,
    template: str | None,
    *,
    completed: datetime | None = None,
) -> dict[str, Any]:
    return {
        "enrollment_id": enrollment.id,
        "prospect_id": prospect.id,
        "step_id": step.id,
        "step_index": index,
        "channel": step.channel.value,
        "state": state.value,
        "due_at": due,
        "template": template,
        "attempts": 0,
        "completed_at": completed,
        "created_at": now,
        "updated_at": now,
    }
