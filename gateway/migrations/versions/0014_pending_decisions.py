"""Decisions in their undo window: taken back by the agent, or made when the window closes.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_decisions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("review_id", sa.String(), sa.ForeignKey("reviews.id"), nullable=False),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("text", sa.String(), nullable=True),
        sa.Column("arguments", sa.JSON(), nullable=True),
        sa.Column("comment", sa.String(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("review_id"),
    )
    op.create_index("ix_pending_decisions_due_at", "pending_decisions", ["due_at"])


def downgrade() -> None:
    op.drop_index("ix_pending_decisions_due_at", "pending_decisions")
    op.drop_table("pending_decisions")
