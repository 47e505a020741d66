"""Approved answers, served again for the same request when the policy's `reuse:` is on.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approved_answers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("reuse_key", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("review_id", sa.String(), sa.ForeignKey("reviews.id"), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_by", sa.Integer(), sa.ForeignKey("agents.id"), nullable=True),
        sa.UniqueConstraint("review_id"),
    )
    op.create_index("ix_approved_answers_reuse_key", "approved_answers", ["reuse_key"])
    op.create_index("ix_approved_answers_api_key_id", "approved_answers", ["api_key_id"])


def downgrade() -> None:
    op.drop_index("ix_approved_answers_api_key_id", "approved_answers")
    op.drop_index("ix_approved_answers_reuse_key", "approved_answers")
    op.drop_table("approved_answers")
