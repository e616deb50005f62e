"""`sequencer report`: what each sequence, step and template earned, in the terminal, as JSON,
or as an HTML page with charts."""

from __future__ import annotations

import asyncio
import os
import webbrowser
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from sequencer.catalog import SEQUENCE_SUFFIXES
from sequencer.cli.common import cli, console, fail, local, open_engine, plural, print_json, table
from sequencer.runtime.analytics import (
    AttemptFigure,
    Report,
    SequenceFigures,
    build_report,
    later_share,
)
from sequencer.runtime.report_html import ordinal, percent, render_html

DEFAULT_HTML = "sequencer-report.html"
BAR_WIDTH = 40


@cli.command("report")
@click.argument("sequence", required=False)
@click.option(
    "--html",
    "html_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as an HTML page with charts.",
)
@click.option(
    "--open",
    "open_page",
    is_flag=True,
    help=f"Open the HTML page in a browser (written to {DEFAULT_HTML} unless --html).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report_command(
    sequence: str | None, html_file: Path | None, open_page: bool, as_json: bool
) -> None:
    """Sent, replied, bounced, unsubscribed and out-of-office per sequence and step; replies
    by attempt; reply rate per template; leads nobody is working; touches that need a human.

    SEQUENCE (a name or a path) limits the report to one sequence; a sequence whose file was
    removed is still reported from the database.
    """
    name = _name(sequence) if sequence else None

    async def run() -> Report:
        async with open_engine(quiet=as_json) as engine:
            return await build_report(engine, name)

    report = asyncio.run(run())
    if as_json:
        print_json(report.as_dict())
    else:
        render_text(report, console())
    if html_file is None and open_page:
        html_file = Path(DEFAULT_HTML)
    if html_file is not None:
        _write_html(report, html_file, open_page, quiet=as_json)


def _name(argument: str) -> str:
    """A sequence name from a name or a path to its file."""
    path = Path(argument)
    if path.suffix in SEQUENCE_SUFFIXES or os.sep in argument:
        return path.stem
    return argument


def _write_html(report: Report, path: Path, open_page: bool, *, quiet: bool) -> None:
    try:
        path.write_text(render_html(report), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}", "give --html a path in a folder you can write")
    url = path.resolve().as_uri()
    # With --json, stdout is the JSON document; where the page went is said on stderr.
    click.echo(f"\nWrote {path} ({url})", err=quiet)
    if open_page and not webbrowser.open(url):
        click.echo(f"Could not start a browser; open {url} yourself.", err=True)


# --- the terminal -----------------------------------------------------------------------------


def render_text(report: Report, out: Console) -> None:
    """The report for a terminal (or any rich console): tables and bars, no colour needed."""
    scope = f"sequence {report.sequence}" if report.sequence else "all sequences"
    out.print(f"[bold]Sequencer report[/bold]: {scope}, {local(report.generated_at)}")
    if not any(q.enrollments for q in report.sequences):
        out.print(
            "No enrollments yet. Enroll prospects with `sequencer enroll SEQUENCE FILE.csv`; "
            "this report fills in as emails go out and replies come back.",
            markup=False,
        )
    for sequence in report.sequences:
        _sequence(out, sequence)
    if len(report.sequences) > 1:
        out.print("\n[bold]Replies by attempt, all sequences[/bold]")
        _attempts(out, report.replies_by_attempt)
    _templates(out, report)
    _idle(out, report)
    _stuck(out, report)


def _sequence(out: Console, q: SequenceFigures) -> None:
    title = q.name + (" (archived)" if q.archived else "")
    out.print(f"\n[bold underline]{escape(title)}[/bold underline]")
    if q.description:
        out.print(q.description, markup=False, style="dim")
    if not q.in_project:
        out.print("The sequence file is gone; figures come from the database.", style="dim")
    states = ", ".join(f"{n} {state}" for state, n in q.states.items())
    out.print(f"{plural(q.enrollments, 'enrollment')}: {states}", markup=False)
    if q.stop_reasons:
        reasons = ", ".join(f"{r.replace('_', ' ')} {n}" for r, n in q.stop_reasons.items())
        out.print(f"Stopped because: {reasons}", markup=False)
    g = q.signals
    out.print(
        f"{q.contacted} {'person' if q.contacted == 1 else 'people'} emailed, "
        f"{plural(q.sent, 'email')} sent; "
        f"[bold]{g.replied} replied ({percent(q.reply_rate)} of people emailed)[/bold], "
        f"{g.bounced} bounced, {g.unsubscribed} unsubscribed, {g.out_of_office} out of office"
    )
    columns = ("#", "step", "content", "sent", "replied", "rate", "bounced", "unsub", "ooo")
    grid = _right(table(*columns, "failed", "unknown", "to come"), 0, *range(3, len(columns) + 3))
    for s in q.steps:
        email = s.channel in ("email", "")
        content = s.content if email else f"{s.channel}: {s.content}".rstrip(": ")
        grid.add_row(
            str(s.position),
            escape(s.step + ("" if s.in_sequence else " (removed)")),
            escape(content),
            str(s.sent) if email else f"{s.done} done",
            str(s.signals.replied),
            percent(s.reply_rate),
            str(s.signals.bounced),
            str(s.signals.unsubscribed),
            str(s.signals.out_of_office),
            str(s.failed),
            str(s.unknown),
            str(s.pending),
            style="dim" if not s.in_sequence else None,
        )
    out.print(grid)
    u = q.unattributed
    if u.replied or u.bounced or u.unsubscribed or u.out_of_office:
        out.print(
            f"Before any email went out: {u.replied} replied, {u.bounced} bounced, "
            f"{u.unsubscribed} unsubscribed, {u.out_of_office} out of office",
            style="dim",
        )
    if q.replies_by_attempt:
        out.print("Replies by attempt:")
        _attempts(out, q.replies_by_attempt)


def _attempts(out: Console, attempts: tuple[AttemptFigure, ...]) -> None:
    if not attempts:
        out.print("  no replies yet")
        return
    top = max(a.replies for a in attempts) or 1
    for a in attempts:
        bar = "█" * max(1, round(BAR_WIDTH * a.replies / top)) if a.replies else ""
        out.print(f"  {ordinal(a.attempt):>4} email  {bar} {a.replies}", markup=False)
    share = later_share(attempts)
    out.print(f"  {percent(share)} of replies came after the first email", markup=False)


def _templates(out: Console, report: Report) -> None:
    out.print("\n[bold]Templates[/bold] (reply rate = replies / sent)")
    if not report.templates:
        out.print("  no email has gone out yet")
        return
    grid = _right(table("template", "value-add", "sent", "replied", "rate"), 2, 3, 4)
    for t in report.templates:
        grid.add_row(
            escape(t.template),
            "yes" if t.value_add else "",
            str(t.sent),
            str(t.replied),
            percent(t.reply_rate),
        )
    out.print(grid)


def _idle(out: Console, report: Report) -> None:
    total = report.idle_total
    colour = "red" if total else "green"
    out.print(f"\n[bold {colour}]Leads not being worked: {total}[/bold {colour}]")
    if not total:
        out.print("  every live lead has something planned")
        return
    out.print("  live, with no touch to come, no open task and no stop reason:", style="dim")
    grid = _right(table("prospect", "name", "sequence", "why", "since"))
    for lead in report.idle:
        grid.add_row(
            *(escape(v) for v in (lead.email, lead.name, lead.sequence, lead.why)),
            local(lead.since),
        )
    out.print(grid)
    if total > len(report.idle):
        out.print(f"  ... the oldest {len(report.idle)} shown; --json lists the same")


def _stuck(out: Console, report: Report) -> None:
    failed = report.stuck_totals.get("failed", 0)
    unknown = report.stuck_totals.get("unknown", 0)
    colour = "red" if failed or unknown else "green"
    out.print(
        f"\n[bold {colour}]Touches that need a human: {failed} failed, "
        f"{unknown} unknown[/bold {colour}]"
    )
    for s in report.stuck:
        out.print(
            f"  {s.state:<8} {s.email}  {s.sequence}/{s.step}  since {local(s.since)}",
            markup=False,
        )
        if s.error:
            out.print(Padding(Text(s.error, style="dim"), (0, 0, 0, 11), expand=False))
        out.print(Padding(Text(f"to do: {s.todo}"), (0, 0, 0, 11), expand=False))


def _right(grid: Table, *columns: int) -> Table:
    """Numbers right-aligned; in a narrow terminal, long names fold instead of being cut."""
    for index, column in enumerate(grid.columns):
        column.overflow = "fold"
        if index in columns:
            column.justify = "right"
    return grid
