"""`sequencer web`: unsubscribe links, the JSON API, /healthz and /metrics over HTTP."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import sys

import click

from sequencer.cli.common import cli, fail, load_project_catalog
from sequencer.cli.running import signing_secret
from sequencer.core.errors import DatabaseError
from sequencer.settings import Settings
from sequencer.store.database import Database

_TOKEN_PATH = re.compile(r"^/u/[^/?#]*")


class _HideUnsubscribeTokens(logging.Filter):
    """Access-log lines show ``/u/…`` instead of the token: a token spells out the
    recipient's address, and whoever reads the log could unsubscribe them."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _TOKEN_PATH.sub("/u/…", args[2]), *args[3:])
        return True


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiosqlite", "alembic", "asyncio", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").addFilter(_HideUnsubscribeTokens())


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket, or a message that says what to change (not uvicorn's traceback)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        fail(f"cannot listen on {host}:{port}: {exc}", "give --host an IP address or host name")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fail(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "another program may be using the port: choose another with --port",
        )
    sock.set_inheritable(True)
    return sock


async def _check_database(url: str) -> str | None:
    """Why the database is not ready, or None. The server starts anyway: /healthz says it."""
    database = Database(url)
    try:
        await database.check_schema()
        return None
    except DatabaseError as exc:
        return str(exc)
    finally:
        await database.close()


@cli.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option("--verbose", "-v", is_flag=True, help="Log every request in detail.")
def web_command(host: str, port: int, verbose: bool) -> None:
    """Serve one-click unsubscribe links, the JSON API (/docs), /healthz and /metrics.

    The API needs SEQUENCER_API_TOKEN (or SEQUENCER_API_TOKEN_FILE); without it the API
    answers 503 while unsubscribe links, /healthz and /metrics work. Stops on Ctrl-C or SIGTERM.
    """
    import uvicorn

    from sequencer.web.app import create_app

    _logging(verbose)
    settings = Settings.from_env()
    secret = signing_secret(settings)
    catalog = load_project_catalog()
    problem = asyncio.run(_check_database(settings.database_url))
    if problem:
        click.secho(f"warning: {problem}", fg="yellow", err=True)
    config = catalog.config
    if config is None or not config.sender.public_url:
        click.secho(
            "warning: sender.public_url is not set in sequencer.yaml, so emails carry no "
            "link to this server; set it to the address this server is reached at",
            fg="yellow",
            err=True,
        )
    if settings.api_token is None:
        click.secho(
            "warning: no SEQUENCER_API_TOKEN: the API answers 503 until one is set",
            fg="yellow",
            err=True,
        )
    app = create_app(settings, catalog, secret=secret)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"Serving on http://{shown}:{bound} (API docs at /docs); Ctrl-C to stop.", err=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,
            server_header=False,
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=10,
        )
    )
    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again for
    # whatever handler was there before it; this one makes that a clean exit 0, as for
    # `sequencer run`, so container restarts are not reported as crashes.
    signal.signal(signal.SIGTERM, lambda _signal, _frame: None)
    server.run(sockets=[sock])
