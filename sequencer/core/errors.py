"""The project's exception tree; every error a caller can see is one of these.

::

    SequencerError
     ├── ProblemsFound            input files have problems (carries every one of them)
     ├── ConfigError (ValueError) a setting or the config file is wrong
     ├── SequenceNotFound (LookupError)
     ├── DatabaseError                 the database cannot be reached or used
     │    └── SchemaMismatch            not migrated, or migrated by a newer version
     ├── NotFound (LookupError)        no such prospect, enrollment or task
     ├── InvalidState (ValueError)     the action does not fit the current state
     ├── MailboxUnavailable            cannot connect or log in to a mailbox's server
     └── TemplateError
          ├── TemplateNotFound (LookupError)
          ├── TemplateSyntaxError (ValueError)
          ├── TemplateRenderError (ValueError)   a missing field, a failing filter
          └── TemplateSecurityError              a sandbox escape was attempted

Library errors (Jinja2, PyYAML, zoneinfo) are translated into these at the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sequencer.core.problems import Problem


class SequencerError(Exception):
    """Base of every error raised by Sequencer."""


class ProblemsFound(SequencerError):
    """One or more input files have problems; ``problems`` lists all of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(p.format() for p in self.problems))


class ConfigError(SequencerError, ValueError):
    """A setting or the config file is wrong; the message says which and how to fix it."""


class SequenceNotFound(SequencerError, LookupError):
    """No sequence file matches the given name or path."""


class DatabaseError(SequencerError):
    """The database cannot be reached or used; the message names it (password hidden)."""


class SchemaMismatch(DatabaseError):
    """The database schema is not the one this version needs; the message says what to run."""


class NotFound(SequencerError, LookupError):
    """No prospect, enrollment, task or sequence matches."""


class InvalidState(SequencerError, ValueError):
    """The action does not fit the current state (e.g. resuming a stopped enrollment)."""


class MailboxUnavailable(SequencerError):
    """A mailbox's SMTP or IMAP server cannot be reached or refuses the login; the message
    names the mailbox, host and port. Nothing was sent."""


class TemplateError(SequencerError):
    """A template could not be found, parsed or rendered."""


class TemplateNotFound(TemplateError, LookupError):
    """No template with this name exists."""


class TemplateSyntaxError(TemplateError, ValueError):
    """The template source is not valid Jinja2 or its front matter is wrong."""


class TemplateRenderError(TemplateError, ValueError):
    """Rendering failed, usually because a field has no value and no default."""


class TemplateSecurityError(TemplateError):
    """The template tried to reach Python internals; nothing was executed."""
