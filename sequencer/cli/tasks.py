"""`sequencer tasks` (list, or export to a calendar) and `sequencer task done`."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta
from pathlib import Path

import click

from sequencer.cli.common import cli, console, local, open_engine, plural, print_json, table
from sequencer.core.ics import CalendarTask, render_ics
from sequencer.core.states import TaskOutcome
from sequencer.runtime import reports
from sequencer.store.models import Touch


def _due_before(due: str, now: datetime) -> datetime | None:
    if due == "overdue":
        return now
    if due == "today":
        today = now.astimezone()
        return datetime.combine(today.date() + timedelta(days=1), time(0), today.tzinfo)
    return None


@cli.command("tasks")
@click.option("--owner", metavar="EMAIL", help="Only this rep's tasks (default: everyone's).")
@click.option(
    "--due",
    type=click.Choice(["today", "overdue", "all"]),
    default="today",
    show_default=True,
    help="today: due before midnight (your time); overdue: past due; all: every open task.",
)
@click.option(
    "--ics",
    "ics_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write them as a calendar file for Outlook or Google Calendar.",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def tasks_command(owner: str | None, due: str, ics_file: Path | None, as_json: bool) -> None:
    """Calls, LinkedIn touches and other tasks waiting for a rep, with their scripts."""

    async def run() -> tuple[list[reports.TaskLine], datetime]:
        async with open_engine(quiet=as_json) as engine:
            now = engine.now()
            lines = await reports.task_list(engine, owner=owner, due_before=_due_before(due, now))
            return lines, now

    lines, now = asyncio.run(run())
    if ics_file is not None:
        calendar = render_ics(
            [
                CalendarTask(
                    uid=f"task-{line.task.id}@sequencer",
                    title=line.task.title,
                    description=_description(line),
                    due=line.task.due_at,
                    organizer=line.task.owner,
                )
                for line in lines
            ],
            generated_at=now,
        )
        ics_file.write_text(calendar, encoding="utf-8", newline="")
    if as_json:
        print_json([line.as_dict() for line in lines])
        return
    if not lines:
        click.echo(f"No open tasks{' for ' + owner if owner else ''} ({due}).")
    else:
        grid = table("id", "due", "channel", "prospect", "sequence", "task")
        for line in lines:
            overdue = line.task.due_at < now
            due_text = local(line.task.due_at) + (" (overdue)" if overdue else "")
            who = line.prospect.email
            if line.prospect.company:
                who += f" ({line.prospect.company})"
            grid.add_row(
                str(line.task.id), due_text, line.task.channel, who, line.sequence, line.task.title
            )
        console().print(grid)
        click.echo(
            f"\n{plural(len(lines), 'task')}. Show a script: sequencer tasks --json; "
            "finish one: sequencer task done ID --outcome voicemail"
        )
    if ics_file is not None:
        click.echo(
            f"Wrote {plural(len(lines), 'task')} to {ics_file} (import it into your calendar)."
        )


def _description(line: reports.TaskLine) -> str:
    p = line.prospect
    who = " ".join(x for x in (p.first_name, p.last_name) if x)
    phone = (p.fields or {}).get("phone")
    head = [f"{who} <{p.email}>" if who else p.email]
    if p.company:
        head.append(p.company)
    if phone:
        head.append(f"phone: {phone}")
    head.append(f"sequence: {line.sequence}")
    return "\n".join(head) + "\n\n" + line.task.script


@cli.group()
def task() -> None:
    """Act on one task."""


@task.command("done")
@click.argument("task_id", type=int)
@click.option(
    "--outcome",
    required=True,
    type=click.Choice([o.value for o in TaskOutcome]),
    help="What happened.",
)
@click.option("--note", help="A note for the timeline.")
def task_done(task_id: int, outcome: str, note: str | None) -> None:
    """Mark a task done; the sequence moves on to its next step."""

    async def run() -> Touch | None:
        async with open_engine() as engine:
            return await engine.complete_task(task_id, TaskOutcome(outcome), note)

    next_touch = asyncio.run(run())
    message = f"Task {task_id} done ({outcome})."
    if next_touch is None:
        message += " Nothing more is planned for this enrollment."
    else:
        message += f" Next: {next_touch.step_id} ({next_touch.channel}) {local(next_touch.due_at)}."
    click.echo(message)
