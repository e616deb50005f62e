"""`sequencer inbox check`: what the inbox watcher sees on each mailbox's IMAP server."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from dataclasses import asdict
from typing import Any

import click

from sequencer.cli.common import cli, fail, load_project_catalog, open_engine, plural, print_json
from sequencer.core.config import MailboxConfig
from sequencer.core.errors import ConfigError, DatabaseError, InvalidState, MailboxUnavailable
from sequencer.runtime.engine import Engine
from sequencer.runtime.inbox import InboxProcessor
from sequencer.runtime.watcher import InboxStatus, MailboxWatcher, inbox_status
from sequencer.settings import Settings


@cli.group()
def inbox() -> None:
    """Check the inboxes that replies are read from."""


@inbox.command("check")
@click.argument("address", required=False)
@click.option(
    "--catch-up",
    is_flag=True,
    help="Also process the unprocessed messages now (when no worker watches the mailbox).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def inbox_check(address: str | None, catch_up: bool, as_json: bool) -> None:
    """Connect to a mailbox's IMAP server (every mailbox with an `imap:` block when ADDRESS
    is left out) and report what the watcher sees: the server's capabilities (IDLE or not),
    its folders, and for each watched folder how many messages wait after the stored cursor.
    Read-only unless --catch-up: nothing in the mailbox is ever marked read or changed.
    Exits 1 when a mailbox cannot be checked."""
    catalog = load_project_catalog(quiet=as_json)
    config = catalog.config
    if config is None or not config.mailboxes:
        fail("no mailboxes configured", "add them under `mailboxes:` in sequencer.yaml")
    if address:
        box = config.mailbox(address)
        if box is None:
            known = ", ".join(m.address for m in config.mailboxes)
            fail(f"mailbox {address} is not configured", f"configured: {known}")
        boxes = [box]
    else:
        boxes = [m for m in config.mailboxes if m.imap is not None]
        if not boxes:
            fail(
                "no mailbox has an `imap:` block, so no replies are read",
                "add host, port, security and password_env under a mailbox's `imap:` "
                "(see docs/mailboxes.md)",
            )
    secret = _secret() if catch_up else b""

    async def check() -> list[dict[str, Any]]:
        async with open_engine(quiet=as_json) as engine:
            processor = InboxProcessor(engine, secret=secret) if catch_up else None
            return [await _check_one(engine, box, processor, as_json) for box in boxes]

    try:
        results = asyncio.run(check())
    except DatabaseError as exc:
        fail(str(exc), "check SEQUENCER_DATABASE_URL, or run `sequencer db upgrade`")
    if as_json:
        print_json(results)
    sys.exit(0 if all(r["ok"] for r in results) else 1)


async def _check_one(
    engine: Engine, box: MailboxConfig, processor: InboxProcessor | None, quiet: bool
) -> dict[str, Any]:
    """Check one mailbox (and catch it up when asked), print what was found unless
    ``quiet``, and return it for --json."""
    result: dict[str, Any] = {"address": box.address, "ok": False}
    try:
        status = await inbox_status(engine, box)
    except (ConfigError, MailboxUnavailable) as exc:
        result["error"] = str(exc)
        if not quiet:
            click.secho(f"FAIL  {box.address}: {exc}", fg="red")
        return result
    result.update(asdict(status), ok=status.ok)
    if not quiet:
        _print_status(status)
    if processor is not None:
        result["catch_up"] = await _catch_up(engine, processor, box, quiet)
    return result


async def _catch_up(
    engine: Engine, processor: InboxProcessor, box: MailboxConfig, quiet: bool
) -> dict[str, Any]:
    watcher = MailboxWatcher(engine, processor, box)
    try:
        handled = await watcher.catch_up_once()
    except InvalidState as exc:
        if not quiet:
            click.echo(f"      not caught up: {exc}")
        return {"done": False, "reason": str(exc)}
    except (ConfigError, MailboxUnavailable) as exc:
        if not quiet:
            click.secho(f"      catch-up failed: {exc}", fg="red")
        return {"done": False, "reason": str(exc)}
    kinds = Counter(h.classification.kind.value for h in handled)
    if not quiet:
        summary = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(kinds.items()))
        click.echo(
            f"      processed {plural(len(handled), 'message')}"
            + (f" ({summary})" if summary else "")
            + (
                f"; {watcher.stats.given_up} passed over, see the log"
                if watcher.stats.given_up
                else ""
            )
        )
    return {
        "done": True,
        "processed": len(handled),
        "kinds": dict(kinds),
        "actions": [h.action for h in handled if not h.duplicate],
        "passed_over": watcher.stats.given_up,
    }


def _print_status(status: InboxStatus) -> None:
    colour = "green" if status.ok else "red"
    watcher = f"watched by {status.watcher}" if status.watcher else "no watcher running"
    idle = "IDLE: yes" if status.idle else "IDLE: no (the watcher polls)"
    click.secho(
        f"{'ok  ' if status.ok else 'FAIL'}  {status.address}: IMAP {status.server}, {idle}, "
        f"{watcher}",
        fg=colour,
    )
    click.echo(f"      capabilities: {' '.join(status.capabilities)}")
    click.echo(f"      folders: {', '.join(status.folders) or '(none)'}")
    for folder in status.watched:
        if not folder.ok:
            click.secho(f"      {folder.folder}: {folder.note}", fg="red")
        elif folder.unprocessed is not None and folder.cursor is not None:
            click.echo(
                f"      {folder.folder}: {folder.unprocessed} unprocessed after UID "
                f"{folder.cursor} (UIDVALIDITY {folder.uidvalidity})"
            )
        else:
            click.echo(f"      {folder.folder}: {folder.note}")


def _secret() -> bytes:
    """The signing secret, needed to recognise our own Message-IDs in replies."""
    from sequencer.cli.running import signing_secret

    return signing_secret(Settings.from_env())
