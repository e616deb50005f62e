"""`sequencer touch settle`: a person decides what became of an email whose delivery is unknown."""

from __future__ import annotations

import asyncio

import click

from sequencer.cli.common import cli, local, open_engine
from sequencer.store.models import Touch


@cli.group()
def touch() -> None:
    """Act on one touch (an email or task of an enrollment)."""


@touch.command("settle")
@click.argument("touch_id", type=int)
@click.option(
    "--arrived",
    "decision",
    flag_value="arrived",
    help="The email did arrive (e.g. it is in the Sent folder): record it sent and move on.",
)
@click.option(
    "--resend",
    "decision",
    flag_value="resend",
    help="It never left: send it again now, with the same Message-ID.",
)
@click.option("--note", help="Why, for the timeline (with --arrived).")
def touch_settle(touch_id: int, decision: str | None, note: str | None) -> None:
    """Settle an email whose delivery is `unknown` (listed by `sequencer status` under "Need a
    human"): the connection was lost after the message was handed over, so only a person
    looking at the mailbox's Sent folder, or at the recipient's reply, can say."""
    if decision is None:
        raise click.UsageError("say what happened: --arrived or --resend")

    async def run() -> Touch | None:
        async with open_engine() as engine:
            return await engine.settle(touch_id, arrived=decision == "arrived", note=note)

    result = asyncio.run(run())
    if decision == "resend":
        click.echo(f"Touch {touch_id} goes out again at the next opening, same Message-ID.")
    elif result is None:
        click.echo(f"Touch {touch_id} recorded as sent. Nothing more is planned.")
    else:
        click.echo(
            f"Touch {touch_id} recorded as sent. Next: {result.step_id} ({result.channel}) "
            f"{local(result.due_at)}."
        )
