"""`enroll`, `status`, `timeline`, `pause`, `resume`, `stop`, `suppress`, `archive`."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sequencer.catalog import Project
from sequencer.cli.common import (
    cli,
    console,
    fail,
    local,
    open_engine,
    plural,
    print_json,
    print_problems,
    table,
)
from sequencer.core.errors import SequenceNotFound
from sequencer.core.states import StopReason, SuppressionReason
from sequencer.runtime import reports
from sequencer.runtime.engine import Changed
from sequencer.runtime.enrollment import EnrollReport, enroll, read_csv


def _sequence_name(argument: str) -> str:
    """A sequence name from a name or a path, with did-you-mean when it is unknown."""
    project = Project.discover()
    try:
        return project.resolve_sequence(argument).stem
    except SequenceNotFound as exc:
        fail(str(exc))


def _count_rows(path: Path) -> int:
    with path.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


@cli.command("enroll")
@click.argument("sequence")
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--owner", required=True, metavar="EMAIL", help="The rep who owns these prospects.")
@click.option("--mailbox", metavar="ADDRESS", help="Send from this mailbox (default: by sequence).")
@click.option("--dry-run", is_flag=True, help="Check every row and report, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def enroll_command(
    sequence: str,
    csv_file: Path,
    owner: str,
    mailbox: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Enroll the prospects of a CSV file into SEQUENCE (a name or a path).

    The file needs an email column; first name, company, title, time zone and any other
    columns are read too (extra columns become custom fields). Valid rows are enrolled even
    when others are not; every skipped row is listed with the reason. Running the same file
    again changes nothing.
    """
    name = _sequence_name(sequence)
    if not csv_file.is_file():
        fail(f"{csv_file}: no such file")

    async def run() -> EnrollReport:
        async with open_engine(quiet=as_json) as engine:
            if name not in engine.catalog.sequences:
                print_problems(
                    [p for p in engine.catalog.problems if Path(p.location.path).stem == name],
                    err=True,
                )
                fail(f"sequence {name!r} has problems; fix them first (`sequencer validate`)")
            total = _count_rows(csv_file)
            show = not as_json and console(err=True).is_terminal
            with Progress(
                TextColumn("enrolling"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console(err=True),
                transient=True,
                disable=not show,
            ) as progress:
                bar = progress.add_task("rows", total=total)
                return await enroll(
                    engine,
                    name,
                    read_csv(csv_file),
                    owner=owner,
                    mailbox=mailbox,
                    dry_run=dry_run,
                    progress=lambda n: progress.advance(bar, n),
                )

    report = asyncio.run(run())
    if as_json:
        print_json(report.as_dict())
        return
    verb = "Would enroll" if dry_run else "Enrolled"
    click.echo(
        f"{verb} {report.enrolled} of {plural(report.rows, 'row')} into {name} "
        f"(owner {owner.lower()})."
    )
    if report.skipped:
        click.echo(f"Skipped {len(report.skipped)}:")
        for reason, count in report.reasons().most_common():
            click.echo(f"  {count:>6}  {reason}")
        out = table("line", "email", "reason")
        for row in report.skipped[:200]:
            out.add_row(str(row.line), row.email or "", row.reason)
        console().print(out)
        if len(report.skipped) > 200:
            click.echo(f"... and {len(report.skipped) - 200} more (use --json for all)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(as_json: bool) -> None:
    """Enrollments per sequence and state, what is due soon, what needs a human."""

    async def run() -> reports.Status:
        async with open_engine(quiet=as_json) as engine:
            return await reports.status(engine)

    result = asyncio.run(run())
    if as_json:
        print_json(result.as_dict())
        return
    out = console()
    states = ["active", "paused", "finished", "stopped"]
    if not result.enrollments:
        click.echo(
            "No enrollments yet. Enroll prospects with `sequencer enroll SEQUENCE FILE.csv`."
        )
    else:
        grid = table("sequence", *states)
        for name, counts in sorted(result.enrollments.items()):
            grid.add_row(name, *(str(counts.get(s, 0)) for s in states))
        out.print(grid)
    due = sum(n for _, _, n in result.due_next_hour)
    click.echo(f"\nDue in the next hour: {plural(due, 'touch')}" + ("" if due else "."))
    for sequence, channel, count in result.due_next_hour:
        click.echo(f"  {count:>5}  {channel:<9} {sequence}")
    if result.overdue:
        click.secho(f"Overdue (not yet sent): {plural(result.overdue, 'touch')}", fg="yellow")
    click.echo(
        f"Open tasks: {result.open_tasks}"
        + (f" ({result.overdue_tasks} overdue)" if result.overdue_tasks else "")
    )
    if result.mailboxes:
        click.echo("\nMailboxes:")
        for box in result.mailboxes:
            cap = f"/{box['daily_cap']}" if box["daily_cap"] else ""
            line = f"  {box['address']}: {box['sent_24h']}{cap} sent in 24h"
            if not box["configured"]:
                line += "; not configured in sequencer.yaml"
            if box["paused_until"]:
                until = datetime.fromisoformat(box["paused_until"]).astimezone()
                line += f"; PAUSED until {until:%a %d %b %H:%M}"
            if not box["healthy"]:
                line += "; UNHEALTHY"
            if box["note"] and (box["paused_until"] or not box["healthy"]):
                line += f" ({box['note']})"
            colour = "red" if (box["paused_until"] or not box["healthy"]) else None
            click.secho(line, fg=colour)
    if result.attention:
        click.secho(
            f"\nNeed a human: {plural(len(result.attention), 'touch')}", fg="red", bold=True
        )
        grid = table("touch", "state", "sequence", "step", "prospect", "error")
        for row in result.attention:
            grid.add_row(
                str(row["touch"]),
                row["state"],
                row["sequence"],
                row["step"],
                row["email"],
                (row["error"] or "")[:80],
            )
        out.print(grid)


@cli.command()
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def timeline(email: str, as_json: bool) -> None:
    """Everything that happened to one prospect, in their local time."""

    async def run() -> reports.Timeline:
        async with open_engine(quiet=as_json) as engine:
            return await reports.timeline(engine, email)

    result = asyncio.run(run())
    if as_json:
        print_json(result.as_dict())
        return
    p = result.prospect
    name = " ".join(x for x in (p.first_name, p.last_name) if x)
    at = f", {p.company}" if p.company else ""
    click.secho(f"{name + ' ' if name else ''}<{p.email}>{at}", bold=True)
    click.echo(f"times in {result.zone.key}")
    for summary in result.enrollments:
        line = f"  {summary['sequence']}: {summary['state']}"
        if summary["stop_reason"]:
            line += f" ({summary['stop_reason']})"
        if summary["next"]:
            nxt = summary["next"]
            due = datetime.fromisoformat(nxt["due"]).astimezone(result.zone)
            due_text = f"{due:%a %d %b %H:%M %Z}"
            line += f"; next: {nxt['step']} ({nxt['channel']}, attempt {nxt['attempt']}) {due_text}"
        click.echo(line)
    click.echo()
    for entry in result.entries:
        where = f"[{entry.sequence}] " if entry.sequence else ""
        click.echo(f"  {entry.at:%a %d %b %Y %H:%M %Z}  {where}{entry.text}")


def _report_change(verb: str, email: str, changed: Changed) -> None:
    detail = (
        f", {plural(changed.touches_cancelled, 'pending touch')} cancelled"
        if changed.touches_cancelled
        else ""
    )
    click.echo(f"{verb} {plural(changed.enrollments, 'enrollment')} of {email}{detail}.")


@cli.command()
@click.argument("email")
@click.option("--sequence", metavar="NAME", help="Only this sequence (default: all).")
@click.option("--until", metavar="ISO-8601", help="Resume by itself at this time.")
def pause(email: str, sequence: str | None, until: str | None) -> None:
    """Pause a prospect's active enrollments (until a time, or until `resume`)."""
    until_at = None
    if until:
        try:
            until_at = datetime.fromisoformat(until)
        except ValueError:
            fail(f"--until {until!r} is not an ISO 8601 time", "e.g. --until 2026-03-30T09:00", 2)
        if until_at.tzinfo is None:
            until_at = until_at.astimezone()  # the rep's own zone

    async def run() -> Changed:
        async with open_engine() as engine:
            return await engine.pause(email, sequence=sequence, until=until_at)

    changed = asyncio.run(run())
    _report_change("Paused", email, changed)
    if until_at:
        click.echo(f"They resume by themselves {local(until_at)}.")


@cli.command()
@click.argument("email")
@click.option("--sequence", metavar="NAME", help="Only this sequence (default: all).")
def resume(email: str, sequence: str | None) -> None:
    """Resume paused enrollments; the next touch goes out in the next window, never a burst."""

    async def run() -> Changed:
        async with open_engine() as engine:
            return await engine.resume(email, sequence=sequence)

    _report_change("Resumed", email, asyncio.run(run()))


@cli.command()
@click.argument("email")
@click.option("--sequence", metavar="NAME", help="Only this sequence (default: all).")
def stop(email: str, sequence: str | None) -> None:
    """Stop a prospect's enrollments now; pending touches and tasks are cancelled."""

    async def run() -> Changed:
        async with open_engine() as engine:
            return await engine.stop(email, sequence=sequence, reason=StopReason.MANUAL)

    _report_change("Stopped", email, asyncio.run(run()))


@cli.command()
@click.argument("value", metavar="EMAIL|@DOMAIN")
@click.option(
    "--reason",
    type=click.Choice([r.value for r in SuppressionReason]),
    default=SuppressionReason.MANUAL.value,
    show_default=True,
)
@click.option("--note", help="Why, for the record.")
def suppress(value: str, reason: str, note: str | None) -> None:
    """Never mail an address (or everyone @domain) again; stops what is running for them."""
    cleaned = value.strip().lower()
    if cleaned.startswith("@"):
        if "." not in cleaned[1:] or "@" in cleaned[1:]:
            fail(f"{value!r} is not a domain", "write it like @example.com", 2)
    elif cleaned.count("@") != 1 or cleaned.endswith("@"):
        fail(
            f"{value!r} is not an email address or @domain",
            "e.g. dana@globex.com or @globex.com",
            2,
        )

    async def run() -> Changed:
        async with open_engine() as engine:
            return await engine.suppress(cleaned, reason=SuppressionReason(reason), note=note)

    changed = asyncio.run(run())
    if changed.detail:
        click.echo(f"{cleaned} was {changed.detail}.")
    else:
        click.echo(f"Suppressed {cleaned}.")
    if changed.enrollments:
        _report_change("Stopped", cleaned, changed)


@cli.command()
@click.argument("sequence")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def archive(sequence: str, yes: bool) -> None:
    """Archive a sequence: its live enrollments stop and pending touches are cancelled."""
    name = _sequence_name(sequence)
    if not yes:
        click.confirm(f"Archive {name} and stop everyone in it?", abort=True)

    async def run() -> Changed:
        async with open_engine() as engine:
            return await engine.archive(name)

    changed = asyncio.run(run())
    click.echo(
        f"Archived {name}: {plural(changed.enrollments, 'enrollment')} stopped, "
        f"{plural(changed.touches_cancelled, 'pending touch')} cancelled."
    )
