"""Retention and erasure: a retention period per API key, when an exchange's bodies were purged, and the trail
of what `hitl purge` and `hitl erase` removed.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("retention_days", sa.Float(), nullable=True))
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "data_removals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("criterion", sa.String(length=200), nullable=False),
        sa.Column("removed", sa.JSON(), nullable=False, comment="Rows removed or emptied, per table."),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    # `hitl purge` on a schedule in `hitl serve`: one process at a time runs it.
    leases = sa.table(
        "leases",
        sa.column("name", sa.String()),
        sa.column("holder", sa.String()),
        sa.column("expires_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(leases, [{"name": "retention", "holder": "", "expires_at": datetime(1970, 1, 1, tzinfo=UTC)}])


def downgrade() -> None:
    op.execute("DELETE FROM leases WHERE name = 'retention'")
    op.drop_table("data_removals")
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.drop_column("purged_at")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("retention_days")
