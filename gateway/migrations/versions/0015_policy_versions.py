"""Policy versions `hitl learn` proposed: applied, refused or rolled back, with the reason for each.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("base", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False, comment="Per group: threshold, escaped-error bound, labels."),
        sa.Column("labels", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rolled_back_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_policy_versions_base", "policy_versions", ["base"])
    op.create_index("ix_policy_versions_status", "policy_versions", ["status"])
    # `hitl learn` on a schedule in `hitl serve`: one process at a time runs it.
    leases = sa.table(
        "leases",
        sa.column("name", sa.String()),
        sa.column("holder", sa.String()),
        sa.column("expires_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(leases, [{"name": "learning", "holder": "", "expires_at": datetime(1970, 1, 1, tzinfo=UTC)}])


def downgrade() -> None:
    op.execute("DELETE FROM leases WHERE name = 'learning'")
    op.drop_index("ix_policy_versions_status", "policy_versions")
    op.drop_index("ix_policy_versions_base", "policy_versions")
    op.drop_table("policy_versions")
