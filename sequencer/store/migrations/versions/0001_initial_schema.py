"""Initial schema: prospects, sequences, enrollments, touches, tasks, inbound mail, suppressions,
events, mailbox state and leases.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 15:02:22.805198
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "mailbox_cursors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("mailbox", sa.String(length=254), nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column(
            "uidvalidity", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("last_uid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_cursors")),
        sa.UniqueConstraint("mailbox", "folder", name=op.f("uq_mailbox_cursors_mailbox")),
    )
    op.create_table(
        "mailbox_state",
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("status_note", sa.Text(), nullable=True),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_mailbox_state")),
    )
    op.create_table(
        "prospects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("company", sa.String(length=300), nullable=True),
        sa.Column("title", sa.String(length=300), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("domain", sa.String(length=253), nullable=True),
        sa.Column(
            "fields",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_prospects_email_normalised")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prospects")),
        sa.UniqueConstraint("email", name=op.f("uq_prospects_email")),
    )
    with op.batch_alter_table("prospects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prospects_domain"), ["domain"], unique=False)

    op.create_table(
        "sequences",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequences")),
        sa.UniqueConstraint("name", name=op.f("uq_sequences_name")),
    )
    op.create_table(
        "suppressions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("value", sa.String(length=254), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("value = lower(value)", name=op.f("ck_suppressions_value_normalised")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("value", name=op.f("uq_suppressions_value")),
    )
    op.create_table(
        "sequence_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "sequence_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "step_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
            name=op.f("fk_sequence_versions_sequence_id_sequences"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequence_versions")),
        sa.UniqueConstraint(
            "sequence_id", "content_hash", name=op.f("uq_sequence_versions_sequence_id")
        ),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "prospect_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "sequence_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("owner", sa.String(length=254), nullable=False),
        sa.Column("mailbox", sa.String(length=254), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("thread_message_id", sa.String(length=255), nullable=True),
        sa.Column("thread_subject", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('active', 'paused', 'finished', 'stopped')",
            name=op.f("ck_enrollments_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["prospect_id"], ["prospects.id"], name=op.f("fk_enrollments_prospect_id_prospects")
        ),
        sa.ForeignKeyConstraint(
            ["sequence_id"], ["sequences.id"], name=op.f("fk_enrollments_sequence_id_sequences")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["sequence_versions.id"],
            name=op.f("fk_enrollments_version_id_sequence_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollments_owner"), ["owner"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_enrollments_prospect_id"), ["prospect_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_enrollments_sequence_id"), ["sequence_id"], unique=False
        )
        batch_op.create_index(
            "ix_enrollments_state_paused_until", ["state", "paused_until"], unique=False
        )
        batch_op.create_index(
            "uq_enrollments_live",
            ["prospect_id", "sequence_id"],
            unique=True,
            sqlite_where=sa.text("state IN ('active', 'paused')"),
            postgresql_where=sa.text("state IN ('active', 'paused')"),
        )

    op.create_table(
        "touches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "enrollment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "prospect_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("template", sa.String(length=200), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('scheduled', 'queued', 'sending', 'sent', 'done', 'skipped', "
            "'cancelled', 'failed', 'unknown')",
            name=op.f("ck_touches_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"], ["enrollments.id"], name=op.f("fk_touches_enrollment_id_enrollments")
        ),
        sa.ForeignKeyConstraint(
            ["prospect_id"], ["prospects.id"], name=op.f("fk_touches_prospect_id_prospects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_touches")),
        sa.UniqueConstraint("enrollment_id", "step_id", name=op.f("uq_touches_enrollment_id")),
        sa.UniqueConstraint("message_id", name=op.f("uq_touches_message_id")),
    )
    with op.batch_alter_table("touches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_touches_due",
            ["due_at"],
            unique=False,
            sqlite_where=sa.text("state IN ('scheduled', 'queued')"),
            postgresql_where=sa.text("state IN ('scheduled', 'queued')"),
        )
        batch_op.create_index(
            batch_op.f("ix_touches_enrollment_id"), ["enrollment_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_touches_prospect_id"), ["prospect_id"], unique=False)

    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "prospect_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "enrollment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("touch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"], ["enrollments.id"], name=op.f("fk_events_enrollment_id_enrollments")
        ),
        sa.ForeignKeyConstraint(
            ["prospect_id"], ["prospects.id"], name=op.f("fk_events_prospect_id_prospects")
        ),
        sa.ForeignKeyConstraint(
            ["touch_id"], ["touches.id"], name=op.f("fk_events_touch_id_touches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_enrollment_id"), ["enrollment_id"], unique=False
        )
        batch_op.create_index("ix_events_prospect_at", ["prospect_id", "at"], unique=False)

    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("mailbox", sa.String(length=254), nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column(
            "uidvalidity", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("uid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("sender", sa.String(length=254), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column(
            "enrollment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("touch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_inbound_messages_enrollment_id_enrollments"),
        ),
        sa.ForeignKeyConstraint(
            ["touch_id"], ["touches.id"], name=op.f("fk_inbound_messages_touch_id_touches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint(
            "mailbox", "folder", "uidvalidity", "uid", name=op.f("uq_inbound_messages_mailbox")
        ),
    )
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbound_messages_enrollment_id"), ["enrollment_id"], unique=False
        )

    op.create_table(
        "tasks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("touch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "enrollment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("owner", sa.String(length=254), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("script", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('open', 'done', 'expired', 'cancelled')", name=op.f("ck_tasks_state_known")
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"], ["enrollments.id"], name=op.f("fk_tasks_enrollment_id_enrollments")
        ),
        sa.ForeignKeyConstraint(
            ["touch_id"], ["touches.id"], name=op.f("fk_tasks_touch_id_touches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("touch_id", name=op.f("uq_tasks_touch_id")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_enrollment_id"), ["enrollment_id"], unique=False)
        batch_op.create_index(
            "ix_tasks_owner_state_due", ["owner", "state", "due_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_owner_state_due")
        batch_op.drop_index(batch_op.f("ix_tasks_enrollment_id"))

    op.drop_table("tasks")
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_messages_enrollment_id"))

    op.drop_table("inbound_messages")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_prospect_at")
        batch_op.drop_index(batch_op.f("ix_events_enrollment_id"))

    op.drop_table("events")
    with op.batch_alter_table("touches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_touches_prospect_id"))
        batch_op.drop_index(batch_op.f("ix_touches_enrollment_id"))
        batch_op.drop_index(
            "ix_touches_due",
            sqlite_where=sa.text("state IN ('scheduled', 'queued')"),
            postgresql_where=sa.text("state IN ('scheduled', 'queued')"),
        )

    op.drop_table("touches")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_enrollments_live",
            sqlite_where=sa.text("state IN ('active', 'paused')"),
            postgresql_where=sa.text("state IN ('active', 'paused')"),
        )
        batch_op.drop_index("ix_enrollments_state_paused_until")
        batch_op.drop_index(batch_op.f("ix_enrollments_sequence_id"))
        batch_op.drop_index(batch_op.f("ix_enrollments_prospect_id"))
        batch_op.drop_index(batch_op.f("ix_enrollments_owner"))

    op.drop_table("enrollments")
    op.drop_table("sequence_versions")
    op.drop_table("suppressions")
    op.drop_table("sequences")
    with op.batch_alter_table("prospects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prospects_domain"))

    op.drop_table("prospects")
    op.drop_table("mailbox_state")
    op.drop_table("mailbox_cursors")
    op.drop_table("leases")
