"""Console sessions kept server-side, so a logout ends its session at once (a copied cookie stops working).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_console_sessions_token_hash", "console_sessions", ["token_hash"], unique=True)
    op.create_index("ix_console_sessions_agent_id", "console_sessions", ["agent_id"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_agent_id", "console_sessions")
    op.drop_index("ix_console_sessions_token_hash", "console_sessions")
    op.drop_table("console_sessions")
