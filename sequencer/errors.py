"""Public re-export of the exception tree, which lives in :mod:`sequencer.core.errors`."""

from sequencer.core.errors import (
    ConfigError,
    DatabaseError,
    InvalidState,
    NotFound,
    ProblemsFound,
    SchemaMismatch,
    SequenceNotFound,
    SequencerError,
    TemplateError,
    TemplateNotFound,
    TemplateRenderError,
    TemplateSecurityError,
    TemplateSyntaxError,
)

__all__ = [
    "ConfigError",
    "DatabaseError",
    "InvalidState",
    "NotFound",
    "ProblemsFound",
    "SchemaMismatch",
    "SequenceNotFound",
    "SequencerError",
    "TemplateError",
    "TemplateNotFound",
    "TemplateRenderError",
    "TemplateSecurityError",
    "TemplateSyntaxError",
]
