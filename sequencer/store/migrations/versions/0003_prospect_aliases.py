"""Prospect aliases: other addresses a prospect writes from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prospect_aliases",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "prospect_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.CheckConstraint(
            "email = lower(email)", name=op.f("ck_prospect_aliases_email_normalised")
        ),
        sa.ForeignKeyConstraint(
            ["prospect_id"],
            ["prospects.id"],
            name=op.f("fk_prospect_aliases_prospect_id_prospects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prospect_aliases")),
        sa.UniqueConstraint("email", name=op.f("uq_prospect_aliases_email")),
    )
    with op.batch_alter_table("prospect_aliases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prospect_aliases_prospect_id"), ["prospect_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("prospect_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prospect_aliases_prospect_id"))
    op.drop_table("prospect_aliases")
