"""`sequencer classify`: what the inbox watcher makes of one saved email."""

from __future__ import annotations

import sys
import unicodedata
from datetime import date, datetime
from pathlib import Path

import click

from sequencer.cli.common import cli, fail, print_json
from sequencer.core import inbound
from sequencer.core.inbound import Classification, InboundKind

_KIND_COLOURS = {
    InboundKind.BOUNCE: "red",
    InboundKind.AUTO_REPLY: "yellow",
    InboundKind.OUT_OF_OFFICE: "yellow",
    InboundKind.UNSUBSCRIBE: "magenta",
    InboundKind.REPLY: "green",
    InboundKind.UNRELATED: "blue",
}
_SHOWN_REPLY = 600  # characters of the reply text shown


@cli.command("classify")
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="Count return dates from this day instead of today.",
)
@click.option(
    "--our-domain",
    "our_domains",
    multiple=True,
    metavar="DOMAIN",
    help="A domain we send from: its messages are our own copies. Repeatable.",
)
def classify_command(
    file: str, as_json: bool, today: datetime | None, our_domains: tuple[str, ...]
) -> None:
    """Classify one saved email (an .eml file, or - for standard input).

    Says whether the message is a bounce, an automatic reply, an out-of-office notice (with
    its return date), an unsubscribe request, a reply from a person, or unrelated, and why.
    Any file works, broken or binary ones included.
    """
    raw = _read(file)
    day = today.date() if today is not None else date.today()  # the CLI reads the clock
    result = inbound.classify(raw, today=day, our_domains=our_domains)
    if as_json:
        print_json(result.as_dict())
    else:
        _print_summary(result)


def _read(file: str) -> bytes:
    if file == "-":
        return sys.stdin.buffer.read()
    path = Path(file)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        fail(f"{file}: no such file", hint="give the path of a saved email (.eml)")
    except IsADirectoryError:
        fail(f"{file}: is a folder, not a file", hint="give the path of a saved email (.eml)")
    except OSError as exc:
        fail(f"{file}: cannot read it ({exc.strerror or exc})")


def _print_summary(result: Classification) -> None:
    headline = result.kind.value.replace("_", " ")
    if result.kind is InboundKind.BOUNCE and result.permanent is not None:
        headline += " (permanent)" if result.permanent else " (temporary)"
    click.echo(click.style(headline, fg=_KIND_COLOURS[result.kind], bold=True))
    rows: list[tuple[str, str | None]] = [
        ("reason", result.reason),
        ("from", result.sender),
        ("subject", result.subject),
        ("message id", result.message_id),
        ("in reply to", ", ".join(result.in_reply_to)),
        ("recipients", ", ".join(result.recipients)),
        ("status", result.status),
        ("original", result.original_message_id),
    ]
    if result.kind is InboundKind.OUT_OF_OFFICE:
        rows.append(
            ("back on", result.return_date.isoformat() if result.return_date else "not said")
        )
    for label, value in rows:
        if value:
            click.echo(f"  {label:<12}{_shown(value, 200)}")
    if result.kind in {InboundKind.REPLY, InboundKind.UNSUBSCRIBE} and result.reply_text:
        click.echo("  new text:")
        for line in _shown(result.reply_text, _SHOWN_REPLY).splitlines():
            click.echo(f"    {line}")


def _shown(text: str, limit: int) -> str:
    """``text`` safe for a terminal: control characters replaced, cut at ``limit``."""
    cut = text if len(text) <= limit else text[: limit - 1] + "…"
    return "".join(
        ch if ch == "\n" or not unicodedata.category(ch).startswith("C") else "\ufffd" for ch in cut
    )
