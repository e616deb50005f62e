"""Indexes for the dispatcher's housekeeping: touches in flight and open tasks.

With a million enrollments the touches table holds millions of rows, nearly all `sent` or
`scheduled`; the few `queued`, `sending` or `unknown` ones (stale-claim recovery, the
Sent-folder re-check) and the open tasks (expiry) are found through small partial indexes
instead of a scan of the whole table every housekeeping round.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

IN_FLIGHT = "state IN ('queued', 'sending', 'unknown')"
OPEN = "state = 'open'"


def upgrade() -> None:
    with op.batch_alter_table("touches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_touches_in_flight",
            ["state", "updated_at"],
            unique=False,
            sqlite_where=sa.text(IN_FLIGHT),
            postgresql_where=sa.text(IN_FLIGHT),
        )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_open_due",
            ["due_at"],
            unique=False,
            sqlite_where=sa.text(OPEN),
            postgresql_where=sa.text(OPEN),
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_tasks_open_due", sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN)
        )
    with op.batch_alter_table("touches", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_touches_in_flight",
            sqlite_where=sa.text(IN_FLIGHT),
            postgresql_where=sa.text(IN_FLIGHT),
        )
