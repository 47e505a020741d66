"""Notifications to a team's channels (a Slack-compatible webhook, e-mail): reviews past their tier's SLA and the
daily digest, each made once and retried with backoff; and the lease that lets one process at a time send them.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(length=64), nullable=False, unique=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("review_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=2000), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_notifications_status", "notifications", ["status"])
    op.create_index("ix_notifications_next_attempt_at", "notifications", ["next_attempt_at"])
    leases = sa.table(
        "leases",
        sa.column("name", sa.String()),
        sa.column("holder", sa.String()),
        sa.column("expires_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(leases, [{"name": "notifications", "holder": "", "expires_at": datetime(1970, 1, 1, tzinfo=UTC)}])


def downgrade() -> None:
    op.execute("DELETE FROM leases WHERE name = 'notifications'")
    op.drop_index("ix_notifications_next_attempt_at", "notifications")
    op.drop_index("ix_notifications_status", "notifications")
    op.drop_table("notifications")
