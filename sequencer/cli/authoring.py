"""`sequencer validate` and `sequencer preview`: the authoring loop."""

from __future__ import annotations

import sys
from collections.abc import Sequence as Seq
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from sequencer.catalog import (
    HTML_SUFFIX,
    SEQUENCE_SUFFIXES,
    TEMPLATE_SUFFIX,
    Catalog,
    Project,
    display,
    load_catalog,
    templates_used,
)
from sequencer.cli.common import cli, fail, plural, print_json, print_problems
from sequencer.core.calendar import timezone_problem
from sequencer.core.model import MailboxMode, Sequence
from sequencer.core.planning import PlannedTouch, plan_timeline, prospect_zone
from sequencer.core.problems import Severity, has_errors

PREVIEW_EMAIL = "prospect@example.com"


# --- validate ----------------------------------------------------------------------------------


def _split_paths(paths: Seq[str]) -> tuple[list[Path], set[str], Path | None]:
    """Sequence files, template names and the folder to discover the project from."""
    sequence_files: list[Path] = []
    template_names: set[str] = set()
    anchor: Path | None = None
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            fail(f"{raw}: no such file or folder", "give a sequence file, a template or a folder")
        anchor = anchor or path
        if path.is_dir():
            found_sequences = sorted(p for p in path.iterdir() if p.suffix in SEQUENCE_SUFFIXES)
            found_templates = sorted(path.glob(f"*{TEMPLATE_SUFFIX}"))
            if not found_sequences and not found_templates:
                fail(
                    f"{raw}: no sequences (*.yaml) or templates (*{TEMPLATE_SUFFIX}) in this folder"
                )
            sequence_files.extend(found_sequences)
            template_names.update(_template_name(p) for p in found_templates)
        elif path.suffix in SEQUENCE_SUFFIXES:
            sequence_files.append(path)
        elif path.name.endswith(TEMPLATE_SUFFIX):
            template_names.add(_template_name(path))
        else:
            fail(
                f"{raw}: not a sequence (.yaml) or template ({TEMPLATE_SUFFIX}) file",
                "sequences live in sequences/*.yaml, templates in templates/*.j2",
            )
    return sequence_files, template_names, anchor


def _template_name(path: Path) -> str:
    name = path.name
    if name.endswith(HTML_SUFFIX):
        return name[: -len(HTML_SUFFIX)]
    return name[: -len(TEMPLATE_SUFFIX)]


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
def validate(paths: tuple[str, ...], as_json: bool) -> None:
    """Check sequences and templates; every problem with file:line:col and a hint.

    PATHS are sequence files, templates or folders (default: sequences/ and templates/).
    Exit status 0 when there are no errors, 1 otherwise.
    """
    if paths:
        sequence_files, template_names, anchor = _split_paths(paths)
        project = Project.discover(anchor)
        catalog = load_catalog(project, sequence_files, template_names)
        checked_sequences = len(sequence_files)
        checked_templates = len(template_names | templates_used(catalog.sequences.values()))
    else:
        project = Project.discover()
        if not project.sequences_dir.is_dir() and not project.templates_dir.is_dir():
            fail(
                f"nothing to validate: no sequences/ or templates/ folder in {project.root}",
                "run this in your project folder, or pass the files to check",
            )
        catalog = load_catalog(project)
        checked_sequences = len(project.sequence_files())
        checked_templates = len(catalog.template_files)
    problems = catalog.sorted_problems()
    errors = sum(p.severity is Severity.ERROR for p in problems)
    warnings = len(problems) - errors
    if as_json:
        print_json(
            {
                "ok": errors == 0,
                "errors": errors,
                "warnings": warnings,
                "sequences": sorted(catalog.sequences),
                "templates": sorted(catalog.templates),
                "problems": [p.as_dict() for p in problems],
            }
        )
    else:
        print_problems(problems)
        checked = (
            f"{plural(checked_sequences, 'sequence')} and {plural(checked_templates, 'template')}"
        )
        if errors:
            tail = f", {plural(warnings, 'warning')}" if warnings else ""
            click.secho(f"\n{plural(errors, 'error')}{tail} in {checked}.", fg="red", bold=True)
        elif warnings:
            click.secho(f"\n{plural(warnings, 'warning')}; {checked} OK.", fg="yellow")
        else:
            click.secho(f"OK: {checked}, no problems.", fg="green")
    sys.exit(1 if errors else 0)


# --- preview -----------------------------------------------------------------------------------


def _parse_prospect(pairs: Seq[str]) -> dict[str, str]:
    prospect: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            fail(
                f"--prospect {pair!r}: expected KEY=VALUE",
                "e.g. --prospect first_name=Dana --prospect company=Globex",
                code=2,
            )
        prospect[key] = value.strip()
    if prospect.get("timezone"):
        problem = timezone_problem(prospect["timezone"])
        if problem:
            fail(f"--prospect timezone: {problem[0]}", problem[1], code=2)
    if "email" in prospect and "@" not in prospect["email"]:
        fail(f"--prospect email={prospect['email']!r} is not an email address", code=2)
    return prospect


def _parse_start(text: str | None, zone: ZoneInfo) -> datetime:
    if not text:
        return datetime.now(zone)  # the CLI is where the clock is read
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        fail(
            f"--start {text!r} is not an ISO 8601 time",
            "e.g. --start 2026-03-23T08:00 (prospect's local time) or 2026-03-23T08:00:00-04:00",
            code=2,
        )
    return start if start.tzinfo else start.replace(tzinfo=zone)


def _load_sequence(name: str) -> tuple[Catalog, Sequence]:
    project = Project.discover(Path(name) if Path(name).suffix in SEQUENCE_SUFFIXES else None)
    path = project.resolve_sequence(name)
    catalog = load_catalog(project, [path])
    if has_errors(catalog.problems):
        print_problems(catalog.sorted_problems())
        fail(f"{display(path)} has problems; fix them first (see `sequencer validate`)")
    return catalog, catalog.sequences[path.stem]


@cli.command()
@click.argument("sequence")
@click.option(
    "--prospect",
    "-p",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A prospect field (email, first_name, company, timezone, custom fields...). Repeatable.",
)
@click.option("--start", help="When the enrollment happens (ISO 8601; default now).")
@click.option("--mailbox", help="Sending mailbox whose signature to use (default: the first).")
@click.option("--json", "as_json", is_flag=True, help="Print the touches as a JSON list.")
@click.option("--brief", is_flag=True, help="Only the timeline, without bodies.")
def preview(
    sequence: str,
    pairs: tuple[str, ...],
    start: str | None,
    mailbox: str | None,
    as_json: bool,
    brief: bool,
) -> None:
    """Show a sequence's planned timeline for one prospect, every touch rendered.

    SEQUENCE is a name (cold-outbound) or a path. Times are the prospect's local time.
    """
    catalog, seq = _load_sequence(sequence)
    prospect = _parse_prospect(pairs)
    prospect.setdefault("email", PREVIEW_EMAIL)
    zone = prospect_zone(seq, prospect)
    start_at = _parse_start(start, zone)
    config = catalog.config
    if mailbox is None and seq.mailbox.mode is MailboxMode.LIST:
        mailbox = seq.mailbox.addresses[0]
    if mailbox is not None and (config is None or config.mailbox(mailbox) is None):
        fail(f"--mailbox {mailbox}: not configured", "add it under `mailboxes:` in sequencer.yaml")
    sender = config.sender_fields(mailbox) if config else {}
    public_url = (config.sender.public_url if config else "") or "https://unsubscribe.example"
    touches = plan_timeline(
        seq,
        catalog.templates,
        prospect=prospect,
        sender=sender,
        start=start_at,
        unsubscribe_url=f"{public_url}/u/PREVIEW-TOKEN",
    )
    failed = [t for t in touches if t.error]
    if as_json:
        print_json([t.as_dict() for t in touches])
    else:
        _print_timeline(seq, prospect, zone, start_at, touches, brief)
    if failed:
        for touch in failed:
            click.secho(f"error: step {touch.step.id!r}: {touch.error}", fg="red", err=True)
        sys.exit(1)


def _print_timeline(
    seq: Sequence,
    prospect: dict[str, str],
    zone: ZoneInfo,
    start: datetime,
    touches: list[PlannedTouch],
    brief: bool,
) -> None:
    who = prospect.get("name") or " ".join(
        p for p in (prospect.get("first_name"), prospect.get("last_name")) if p
    )
    click.secho(f"{seq.name}", bold=True, nl=False)
    click.echo(f": {seq.description}" if seq.description else "")
    click.echo(
        f"Prospect: {who + ' ' if who else ''}<{prospect['email']}>; times in {zone.key}; "
        f"enrolled {start:%a %d %b %Y %H:%M %Z}"
    )
    width = len(str(len(touches)))
    for touch in touches:
        when = f"{touch.due:%a %d %b %Y %H:%M %Z}"
        head = f"{touch.attempt:>{width}}/{touch.total}  {when:<26} {touch.channel.value:<8} "
        click.echo()
        label = touch.step.id
        if touch.template:
            label += f" ({touch.template})"
        click.echo(click.style(head, bold=True) + label)
        pad = " " * (width * 2 + 3)
        if touch.skipped:
            click.secho(f"{pad}skipped: {touch.skipped}", fg="yellow")
            continue
        if touch.error:
            click.secho(f"{pad}cannot render: {touch.error}", fg="red")
            continue
        if touch.rotation:
            click.secho(f"{pad}rotation: {touch.rotation.reason}", dim=True)
        if touch.subject:
            tag = "Subject" if touch.channel.value == "email" else "Task"
            click.echo(f"{pad}{tag}: {touch.subject}")
        if touch.body and not brief:
            for line in touch.body.rstrip().splitlines():
                click.echo(f"{pad}│ {line}".rstrip())
