"""The lifecycle states of enrollments, touches and tasks, with their terminal sets."""

from __future__ import annotations

from enum import StrEnum


class EnrollmentState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # until a time (out of office) or by hand
    FINISHED = "finished"  # every step done
    STOPPED = "stopped"  # ended early; see StopReason


#: An enrollment in one of these will never send again.
ENROLLMENT_ENDED = frozenset({EnrollmentState.FINISHED, EnrollmentState.STOPPED})
#: At most one enrollment per (prospect, sequence) may be in one of these.
ENROLLMENT_LIVE = frozenset({EnrollmentState.ACTIVE, EnrollmentState.PAUSED})


class StopReason(StrEnum):
    REPLIED = "replied"
    BOUNCED = "bounced"
    UNSUBSCRIBED = "unsubscribed"
    ACCOUNT_REPLIED = "account_replied"  # someone else at the same company replied
    SUPPRESSED = "suppressed"  # address or domain added to the suppression list
    MANUAL = "manual"
    ARCHIVED = "archived"  # the sequence was archived
    POOL_EXHAUSTED = "pool_exhausted"


class TouchState(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"  # written before the SMTP call; never silently resent
    SENT = "sent"  # an email went out
    DONE = "done"  # a task was completed by the rep (or moved on by itself)
    SKIPPED = "skipped"  # e.g. a rotation pool ran out with policy `skip`
    CANCELLED = "cancelled"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the SMTP outcome could not be known


#: A touch in one of these is finished with; nothing will happen to it again by itself.
TOUCH_TERMINAL = frozenset(
    {
        TouchState.SENT,
        TouchState.DONE,
        TouchState.SKIPPED,
        TouchState.CANCELLED,
        TouchState.FAILED,
        TouchState.UNKNOWN,
    }
)
#: Touches that are still to happen; pausing or stopping an enrollment acts on these.
TOUCH_PENDING = frozenset({TouchState.SCHEDULED, TouchState.QUEUED})
#: Touches after which the sequence moves on to its next step.
TOUCH_COMPLETED = frozenset({TouchState.SENT, TouchState.DONE, TouchState.SKIPPED})


class TaskState(StrEnum):
    OPEN = "open"
    DONE = "done"
    EXPIRED = "expired"  # left undone too long; the sequence moved on
    CANCELLED = "cancelled"  # the enrollment stopped first


class TaskOutcome(StrEnum):
    CONNECTED = "connected"
    VOICEMAIL = "voicemail"
    NO_ANSWER = "no-answer"
    SKIPPED = "skipped"


class SuppressionReason(StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    MANUAL = "manual"
    COMPLAINT = "complaint"


class EventKind(StrEnum):
    ENROLLED = "enrolled"
    PLANNED = "planned"
    SENT = "sent"
    TASK_CREATED = "task_created"
    TASK_DONE = "task_done"
    TASK_EXPIRED = "task_expired"
    SKIPPED = "skipped"
    FAILED = "failed"
    DEFERRED = "deferred"  # a temporary SMTP failure; tried again later
    UNKNOWN = "unknown"  # the SMTP outcome could not be known
    REPLIED = "replied"
    BOUNCED = "bounced"
    OUT_OF_OFFICE = "out_of_office"
    UNSUBSCRIBED = "unsubscribed"
    PAUSED = "paused"
    RESUMED = "resumed"
    STOPPED = "stopped"
    FINISHED = "finished"
    SEQUENCE_CHANGED = "sequence_changed"
