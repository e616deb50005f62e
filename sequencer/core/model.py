"""The sequence and template models: frozen, typed values loaded from YAML and Jinja2 files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from enum import StrEnum
from types import MappingProxyType

from sequencer.core.delays import Delay, DelayUnit

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_FIVE_BUSINESS_DAYS = Delay(5, DelayUnit.BUSINESS_DAYS)
_THIRTY_DAYS = Delay(30, DelayUnit.DAYS)
_ONE_DAY = Delay(1, DelayUnit.DAYS)


class Channel(StrEnum):
    EMAIL = "email"
    CALL = "call"
    LINKEDIN = "linkedin"
    TASK = "task"

    @property
    def is_task(self) -> bool:
        return self is not Channel.EMAIL


class Threading(StrEnum):
    REPLY = "reply"  # reply in the current thread (Re: subject, In-Reply-To/References)
    NEW = "new"  # start a new thread with the template's own subject


class WhenExhausted(StrEnum):
    SKIP = "skip"  # skip the step and move on
    STOP = "stop"  # finish the enrollment
    REUSE = "reuse"  # send the template this prospect received least recently


class OutOfOfficeAction(StrEnum):
    PAUSE = "pause"
    IGNORE = "ignore"


class TemplateKind(StrEnum):
    EMAIL = "email"  # needs a subject
    SCRIPT = "script"  # a task script for the rep (call, LinkedIn); no subject


class MailboxMode(StrEnum):
    OWNER = "owner"  # the mailbox of the rep who owns the enrollment
    LIST = "list"  # spread prospects over the listed mailboxes


@dataclass(frozen=True)
class TimeRange:
    """Local wall-clock hours ``[start, end)`` within one day; ``start < end``."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class SendWindow:
    """When sending is allowed, in the prospect's local time."""

    days: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0
    hours: tuple[TimeRange, ...] = (TimeRange(time(9, 0), time(17, 0)),)


@dataclass(frozen=True)
class Schedule:
    timezone: str = "prospect"  # "prospect" or an IANA zone name
    fallback_timezone: str = "UTC"
    window: SendWindow = field(default_factory=SendWindow)
    holidays: tuple[str, ...] = ()  # country codes, optionally with subdivision: "US", "US-CA"

    def zone_name_for(self, prospect_timezone: str | None) -> str:
        """The IANA zone to schedule in: the prospect's (if wanted and known) or the fixed one."""
        if self.timezone == "prospect":
            return prospect_timezone or self.fallback_timezone
        return self.timezone


@dataclass(frozen=True)
class StopRules:
    reply: bool = True
    bounce: bool = True  # always true; kept so the timeline can say why
    unsubscribe: bool = True  # always true: the law requires it
    company_reply: bool = False  # a reply from anyone at the same company stops it too


@dataclass(frozen=True)
class OutOfOfficePolicy:
    action: OutOfOfficeAction = OutOfOfficeAction.PAUSE
    default_pause: Delay = _FIVE_BUSINESS_DAYS  # when no return date is given
    max_pause: Delay = _THIRTY_DAYS


@dataclass(frozen=True)
class Limits:
    """Nuisance limits for one prospect, across all their sequences."""

    min_gap: Delay | None = _ONE_DAY
    max_per_week: int | None = 3


@dataclass(frozen=True)
class MailboxChoice:
    mode: MailboxMode = MailboxMode.OWNER
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """One step of a sequence. Exactly one of ``template``, ``rotate`` or ``script`` is set
    for emails; tasks have ``template`` or ``script`` (inline Jinja2 text) or neither."""

    id: str
    delay: Delay
    channel: Channel
    template: str | None = None
    rotate: str | None = None  # pool name
    script: str | None = None  # inline task script (Jinja2)
    title: str | None = None  # task title shown to the rep
    thread: Threading = Threading.REPLY
    anytime: bool = False  # may go out outside the sending window (speed to lead)
    line: int = 0  # line of the step in its file, for messages


@dataclass(frozen=True)
class Pool:
    name: str
    templates: tuple[str, ...]
    when_exhausted: WhenExhausted = WhenExhausted.SKIP


@dataclass(frozen=True)
class Sequence:
    name: str
    path: str
    steps: tuple[Step, ...]
    description: str = ""
    schedule: Schedule = field(default_factory=Schedule)
    stop: StopRules = field(default_factory=StopRules)
    out_of_office: OutOfOfficePolicy = field(default_factory=OutOfOfficePolicy)
    limits: Limits = field(default_factory=Limits)
    mailbox: MailboxChoice = field(default_factory=MailboxChoice)
    pools: Mapping[str, Pool] = field(default_factory=lambda: MappingProxyType({}))
    fields: tuple[str, ...] = ()  # custom prospect fields the templates may use
    allow_reuse: bool = False  # may a prospect get a template they already received?
    exclusive: bool = False  # a prospect in this sequence is enrolled in no other
    content_hash: str = ""  # sha256 of the file text, to version what was sent

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def index_of(self, step_id: str) -> int:
        """Position of a step, 0-based."""
        for i, step in enumerate(self.steps):
            if step.id == step_id:
                return i
        raise KeyError(step_id)


@dataclass(frozen=True)
class Template:
    """A Jinja2 email or script template with its front matter. Sources are not yet rendered."""

    name: str
    path: str
    subject: str  # Jinja2 source; empty for task scripts without a subject
    body: str  # Jinja2 source of the plain-text part
    html: str | None = None  # Jinja2 source of the optional HTML part
    html_path: str | None = None
    kind: TemplateKind = TemplateKind.EMAIL
    title: str = ""  # display name from front matter ``name``
    tags: tuple[str, ...] = ()
    body_line: int = 1  # line in ``path`` where the body starts
    subject_line: int = 1  # line in ``path`` of the subject key
