"""`sequencer demo`: the whole engine at work, three weeks in about a minute, nothing to set up."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

from sequencer.cli.common import cli
from sequencer.core.states import EventKind
from sequencer.runtime.demo import Demo, DemoEvent, DemoResult

#: How each kind of event is shown; kinds not listed are not shown while the demo runs.
STYLES: dict[str, tuple[str, str]] = {
    EventKind.ENROLLED: ("enrolled", "cyan"),
    EventKind.SENT: ("sent", "white"),
    EventKind.TASK_DONE: ("rep", "blue"),
    EventKind.TASK_EXPIRED: ("task", "dim"),
    EventKind.SKIPPED: ("skipped", "dim"),
    EventKind.REPLIED: ("REPLY", "bold green"),
    EventKind.OUT_OF_OFFICE: ("away", "magenta"),
    EventKind.PAUSED: ("paused", "magenta"),
    EventKind.RESUMED: ("resumed", "magenta"),
    EventKind.BOUNCED: ("BOUNCE", "bold red"),
    EventKind.UNSUBSCRIBED: ("UNSUB", "bold yellow"),
    EventKind.STOPPED: ("stopped", "yellow"),
    EventKind.DEFERRED: ("deferred", "yellow"),
    EventKind.FAILED: ("failed", "red"),
    EventKind.UNKNOWN: ("unknown", "red"),
    EventKind.FINISHED: ("finished", "cyan"),
}
TALLY = (
    (EventKind.SENT, "emails sent"),
    (EventKind.TASK_DONE, "rep tasks done"),
    (EventKind.REPLIED, "replies"),
    (EventKind.OUT_OF_OFFICE, "out of office"),
    (EventKind.BOUNCED, "bounced"),
    (EventKind.UNSUBSCRIBED, "unsubscribed"),
)


class Screen:
    """Live progress on a terminal; plain lines (one per event) anywhere else."""

    def __init__(self, console: Console, days: int) -> None:
        self.console = console
        self.live_mode = console.is_terminal and not os.environ.get("CI")
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=36),
            TextColumn("{task.fields[clock]}"),
            console=console,
        )
        self.task = self.bar.add_task(f"{days} days", total=1.0, clock="")
        self.tally = Text()
        self.live = Live(Group(self.bar, self.tally), console=console, refresh_per_second=8)
        self._last_tally = ""

    def __enter__(self) -> Screen:
        if self.live_mode:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live_mode:
            self.live.stop()

    def event(self, event: DemoEvent) -> None:
        style = STYLES.get(event.kind)
        if style is None or (
            event.kind == EventKind.ENROLLED and event.sequence == "cold-outbound"
        ):
            return
        label, colour = style
        line = Text()
        line.append(f"{event.at:%a %d %b %H:%M}  ", style="dim")
        line.append(f"{label:<9}", style=colour)
        line.append(f"{event.email:<34}", style="bold" if colour.startswith("bold") else "")
        line.append(event.text, style=colour if colour.startswith("bold") else "")
        if event.local is not None and event.kind == EventKind.SENT:
            line.append(f"  ({event.local:%H:%M} {event.local.tzname()} there)", style="dim")
        if self.live_mode:
            self.console.print(line, overflow="ellipsis", no_wrap=True)
        else:
            self.console.print(line, soft_wrap=True)

    def progress(self, now: datetime, fraction: float, counts: Counter[str]) -> None:
        clock = f"{now:%a %d %b %Y %H:%M} New York"
        self.bar.update(self.task, completed=fraction, clock=clock)
        self.tally.plain = "   ".join(f"{counts[kind]} {label}" for kind, label in TALLY)
        if not self.live_mode and self.tally.plain != self._last_tally and now.hour >= 18:
            self._last_tally = self.tally.plain
            self.console.print(
                f"-- {now:%a %d %b}: " + self.tally.plain, style="dim", soft_wrap=True
            )


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("sequencer-demo"),
    show_default=True,
    help="Folder for the captured emails (.eml) and the HTML report.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0, 3600),
    default=60.0,
    show_default=True,
    help="Real seconds the simulated weeks take (0: as fast as possible).",
)
@click.option("--days", type=click.IntRange(1, 90), default=21, show_default=True)
def demo(out: Path, duration: float, days: int) -> None:
    """Watch the engine work: three weeks of the example sequences in about a minute.

    Nothing to set up: a SQLite database in a temporary folder, an SMTP server in this process
    that keeps every email, and a simulated clock. Ten prospects go through the cold-outbound
    sequence; one asks for a demo at night and gets an answer at once; replies, an
    out-of-office, a bounce and an unsubscribe request arrive as real messages and go through
    the same code that reads a real inbox. Ends with a report and a folder of .eml files.
    """
    console = Console(highlight=False)
    console.print(
        f"[bold]Sequencer demo[/]: {days} days of the example sequences in about "
        f"{duration:.0f} s. Times are New York time; each prospect gets mail in their own "
        "business hours.\n"
    )
    started = time.monotonic()
    with Screen(console, days) as screen:
        result = asyncio.run(Demo(out, screen, days=days, duration=duration).run())
    _summary(console, result, time.monotonic() - started)
    if not all(check.ok for check in result.checks):
        raise SystemExit(1)


def _summary(console: Console, result: DemoResult, seconds: float) -> None:
    counts = result.counts
    console.print(
        f"\n[bold]{(result.ended - result.started).days} days in {seconds:.0f} s.[/] "
        + ", ".join(f"{counts[kind]} {label}" for kind, label in TALLY)
        + "."
    )
    console.print("\n[bold]Promises checked against the mail the SMTP server received[/]")
    for check in result.checks:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        console.print(f"  {mark} {check.name}: {check.detail}")
    if result.report is not None:
        from sequencer.cli.report import render_text

        console.print()
        render_text(result.report, console)
    console.print(f"\n[bold]Files[/] in {result.out}/")
    console.print(f"  emails/   {len(result.emails)} emails as sent (.eml; open in any mail app)")
    console.print(f"  inbound/  {len(result.inbound)} messages fed back: replies, away, bounce")
    if result.html is not None:
        console.print(
            f"  {result.html.name}  the report with charts: {result.html.resolve().as_uri()}"
        )
    console.print(
        "\nNext: write your own sequence (README, five-minute tour), or read docs/sequences.md."
    )
