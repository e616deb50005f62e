"""The ``sequencer`` command: parse, call the library, print. Exit 0 ok, 1 problems, 2 usage."""

from __future__ import annotations

import os
import sys
import textwrap

import click

from sequencer.cli import (  # noqa: F401  (importing registers the commands)
    authoring,
    database,
    demo,
    inbox,
    operations,
    report,
    running,
    tasks,
    touches,
    watching,
    web,
)
from sequencer.cli.common import cli
from sequencer.core.errors import SequencerError

__all__ = ["cli", "main"]


def main() -> None:
    """Entry point: run the CLI with errors as messages, never tracebacks."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SequencerError as exc:
        first, _, rest = str(exc).partition("\n")
        click.secho(f"error: {first}", fg="red", err=True)
        if rest:
            click.echo(textwrap.indent(rest, "  "), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("SEQUENCER_DEBUG"):
            raise
        click.secho(f"internal error: {type(exc).__name__}: {exc}", fg="red", err=True)
        click.echo("    hint: run again with SEQUENCER_DEBUG=1 to see the traceback", err=True)
        sys.exit(1)
