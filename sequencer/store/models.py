"""Database tables. The engine's invariants live here as constraints, not only in code."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sequencer.store.types import BigId, Json, UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_LIVE = "state IN ('active', 'paused')"
_PENDING = "state IN ('scheduled', 'queued')"
#: Transient or rare touch states the dispatcher's housekeeping looks for.
_IN_FLIGHT = "state IN ('queued', 'sending', 'unknown')"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: Json,
    }


class Prospect(Base):
    """One person, keyed by normalised email."""

    __tablename__ = "prospects"
    __table_args__ = (CheckConstraint("email = lower(email)", name="email_normalised"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(300))
    title: Mapped[str | None] = mapped_column(String(300))
    timezone: Mapped[str | None] = mapped_column(String(64))
    domain: Mapped[str | None] = mapped_column(String(253), index=True)
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)  # every other field
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ProspectAlias(Base):
    """Another address a prospect writes from, so their replies from it are recognised."""

    __tablename__ = "prospect_aliases"
    __table_args__ = (CheckConstraint("email = lower(email)", name="email_normalised"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prospect_id: Mapped[int] = mapped_column(ForeignKey("prospects.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)


class SequenceRecord(Base):
    """A sequence the engine has seen, by name; archived ones send nothing more. Its current
    version is its newest ``SequenceVersion``."""

    __tablename__ = "sequences"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    archived_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class SequenceVersion(Base):
    """A snapshot of a sequence file, so every touch can say which wording it followed."""

    __tablename__ = "sequence_versions"
    __table_args__ = (UniqueConstraint("sequence_id", "content_hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    step_ids: Mapped[dict[str, Any]] = mapped_column()  # {"steps": [...]} in order
    created_at: Mapped[datetime]


class Enrollment(Base):
    """A prospect in a sequence, owned by a rep, sending from one mailbox."""

    __tablename__ = "enrollments"
    __table_args__ = (
        # One live enrollment per (prospect, sequence); finished ones may repeat.
        Index(
            "uq_enrollments_live",
            "prospect_id",
            "sequence_id",
            unique=True,
            sqlite_where=text(_LIVE),
            postgresql_where=text(_LIVE),
        ),
        CheckConstraint("state IN ('active', 'paused', 'finished', 'stopped')", name="state_known"),
        Index("ix_enrollments_state_paused_until", "state", "paused_until"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prospect_id: Mapped[int] = mapped_column(ForeignKey("prospects.id"), index=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("sequence_versions.id"))
    owner: Mapped[str] = mapped_column(String(254), index=True)
    mailbox: Mapped[str | None] = mapped_column(String(254))
    state: Mapped[str] = mapped_column(String(16))
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    paused_until: Mapped[datetime | None]  # None while paused means "until resumed by hand"
    thread_message_id: Mapped[str | None] = mapped_column(String(255))
    thread_subject: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class Touch(Base):
    """One planned step for one enrollment: the outbox row."""

    __tablename__ = "touches"
    __table_args__ = (
        # Never twice: one touch per step per enrollment, whatever retries or workers do.
        UniqueConstraint("enrollment_id", "step_id"),
        Index(
            "ix_touches_due",
            "due_at",
            sqlite_where=text(_PENDING),
            postgresql_where=text(_PENDING),
        ),
        # Stale claims and sends to recover, unknown outcomes to re-check: a few rows among
        # millions, so housekeeping never scans the table.
        Index(
            "ix_touches_in_flight",
            "state",
            "updated_at",
            sqlite_where=text(_IN_FLIGHT),
            postgresql_where=text(_IN_FLIGHT),
        ),
        CheckConstraint(
            "state IN ('scheduled', 'queued', 'sending', 'sent', 'done', 'skipped', "
            "'cancelled', 'failed', 'unknown')",
            name="state_known",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id"), index=True)
    prospect_id: Mapped[int] = mapped_column(ForeignKey("prospects.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(100))
    step_index: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime]
    template: Mapped[str | None] = mapped_column(String(200))  # chosen once, reused on retry
    message_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Task(Base):
    """A call, LinkedIn or other step for the rep, with its rendered script."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_owner_state_due", "owner", "state", "due_at"),
        # Expiry looks for overdue open tasks of every owner.
        Index(
            "ix_tasks_open_due",
            "due_at",
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
        CheckConstraint("state IN ('open', 'done', 'expired', 'cancelled')", name="state_known"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    touch_id: Mapped[int] = mapped_column(ForeignKey("touches.id"), unique=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id"), index=True)
    owner: Mapped[str] = mapped_column(String(254))
    channel: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    script: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class InboundMessage(Base):
    """One message seen in a watched mailbox, with what the engine made of it."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("mailbox", "folder", "uidvalidity", "uid"),
        # The watcher skips messages a mailbox already saw under another UID.
        Index("ix_inbound_messages_mailbox_message_id", "mailbox", "message_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(254))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigId)
    uid: Mapped[int] = mapped_column(BigId)
    message_id: Mapped[str | None] = mapped_column(String(998))
    sender: Mapped[str | None] = mapped_column(String(254))
    subject: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollments.id"), index=True)
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id"))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime | None]
    processed_at: Mapped[datetime]


class Suppression(Base):
    """An address (``dana@x.com``) or domain (``@x.com``) never to be mailed again."""

    __tablename__ = "suppressions"
    __table_args__ = (CheckConstraint("value = lower(value)", name="value_normalised"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    value: Mapped[str] = mapped_column(String(254), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class Event(Base):
    """An append-only timeline row: enrolled, sent, replied, paused, stopped, ..."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_prospect_at", "prospect_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prospect_id: Mapped[int] = mapped_column(ForeignKey("prospects.id"))
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollments.id"), index=True)
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id"))
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class MailboxState(Base):
    """Per-mailbox health and send bookkeeping."""

    __tablename__ = "mailbox_state"

    address: Mapped[str] = mapped_column(String(254), primary_key=True)
    healthy: Mapped[bool] = mapped_column(default=True)
    status_note: Mapped[str | None] = mapped_column(Text)
    paused_until: Mapped[datetime | None]
    last_sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class MailboxCursor(Base):
    """Where the IMAP watcher is in one folder; stored only with the processed result."""

    __tablename__ = "mailbox_cursors"
    __table_args__ = (UniqueConstraint("mailbox", "folder"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(254))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigId)
    last_uid: Mapped[int] = mapped_column(BigId)
    updated_at: Mapped[datetime]


class Lease(Base):
    """Who runs a singleton job (the dispatcher, one mailbox's watcher) until when."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    holder: Mapped[str] = mapped_column(String(300))
    expires_at: Mapped[datetime]
