"""`sequencer run` (one process), `sequencer worker` (arq) and `sequencer mailbox check`."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from dataclasses import replace
from datetime import timedelta

import click

from sequencer.catalog import Project
from sequencer.cli.common import cli, fail, load_project_catalog, open_engine, plural
from sequencer.core.errors import ConfigError, MailboxUnavailable
from sequencer.runtime.dispatcher import LocalRunner, Stats
from sequencer.runtime.inbox import InboxProcessor
from sequencer.runtime.mailboxes import Mailboxes
from sequencer.runtime.sender import Sender
from sequencer.runtime.watcher import start_watchers
from sequencer.settings import Settings

SECRET_FILE = ".sequencer-secret"


def signing_secret(settings: Settings) -> bytes:
    """The secret that signs unsubscribe links and Message-IDs: SEQUENCER_SECRET(_FILE), or
    one generated once into the project's .sequencer-secret (kept stable across runs)."""
    if settings.secret:
        return settings.secret
    path = Project.discover().root / SECRET_FILE
    if path.is_file():
        value = path.read_bytes().strip()
        if len(value) >= 16:
            return value
    value = secrets.token_urlsafe(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(value + b"\n")
    click.secho(
        f"Generated a signing secret in {path} (keep it; links in sent mail depend on it). "
        "In production set SEQUENCER_SECRET or SEQUENCER_SECRET_FILE instead.",
        fg="yellow",
        err=True,
    )
    return value


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiosqlite", "asyncio", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@cli.command()
@click.option("--verbose", "-v", is_flag=True, help="Log every step.")
def run(verbose: bool) -> None:
    """Send due touches from this one process (SQLite or PostgreSQL, no Redis).

    Stops cleanly on Ctrl-C or SIGTERM: claims nothing new, finishes the emails in flight.
    """
    _logging(verbose)
    settings = Settings.from_env()
    secret = signing_secret(settings)

    async def main() -> Stats:
        async with open_engine() as engine:
            mailboxes = Mailboxes(engine.catalog.config)
            sender = Sender(engine, mailboxes, secret=secret)
            runner = LocalRunner(
                engine,
                sender,
                concurrency=settings.concurrency,
                stale_after=timedelta(seconds=settings.stale_after),
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            boxes = engine.catalog.config.mailboxes if engine.catalog.config else ()
            click.echo(
                f"Sending from {plural(len(boxes), 'mailbox')} with {engine.db.display_url}; "
                "Ctrl-C to stop.",
                err=True,
            )
            # One IMAP watcher per mailbox with an `imap:` block: replies stop sequences.
            watchers = start_watchers(engine, InboxProcessor(engine, secret=secret), stop)
            if watchers:
                click.echo(f"Watching {plural(len(watchers), 'inbox')}.", err=True)
            try:
                return await runner.run(stop)
            finally:
                stop.set()
                await asyncio.gather(*watchers, return_exceptions=True)
                await mailboxes.close()

    stats = asyncio.run(main())
    summary = ", ".join(f"{n} {k}" for k, n in sorted(stats.outcomes.items())) or "nothing sent"
    click.echo(f"Stopped. {summary}.", err=True)


@cli.command()
@click.option("--burst", is_flag=True, help="Exit when the queue is empty (for tests).")
@click.option("--verbose", "-v", is_flag=True, help="Log every step.")
def worker(burst: bool, verbose: bool) -> None:
    """Run an arq worker (PostgreSQL + Redis; start as many as you like, on any machines).

    One of them at a time also dispatches due touches (a lease in the database). SIGTERM:
    no new work is taken, sends in flight finish, then it exits 0.
    """
    from sequencer.runtime.worker import build_worker

    _logging(verbose)
    settings = Settings.from_env()
    settings = replace(settings, secret=signing_secret(settings))
    build_worker(settings, burst=burst).run()


@cli.group()
def mailbox() -> None:
    """Check the configured mailboxes."""


@mailbox.command("check")
@click.argument("address", required=False)
def mailbox_check(address: str | None) -> None:
    """Connect to a mailbox's SMTP server (all mailboxes when ADDRESS is left out) and say
    whether it works: TLS, login and the server's answer. Nothing is sent."""
    catalog = load_project_catalog()
    config = catalog.config
    if config is None or not config.mailboxes:
        fail("no mailboxes configured", "add them under `mailboxes:` in sequencer.yaml")
    boxes = [config.mailbox(address)] if address else list(config.mailboxes)
    if boxes == [None]:
        known = ", ".join(m.address for m in config.mailboxes)
        fail(f"mailbox {address} is not configured", f"configured: {known}")

    async def check() -> int:
        failures = 0
        mailboxes = Mailboxes(config)
        try:
            for box in boxes:
                assert box is not None
                try:
                    summary = await mailboxes.pool(box.address).check()
                    click.secho(f"ok    {box.address}: {summary}", fg="green")
                except (ConfigError, MailboxUnavailable) as exc:
                    failures += 1
                    click.secho(f"FAIL  {box.address}: {exc}", fg="red")
        finally:
            await mailboxes.close()
        return failures

    sys.exit(1 if asyncio.run(check()) else 0)
