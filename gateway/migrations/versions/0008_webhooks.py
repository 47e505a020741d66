"""Webhooks per API key: an endpoint and its signing secret, the outbox of events, and the lease that lets one
process at a time deliver them.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("webhook_url", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=200), nullable=True))
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.String(length=64), nullable=False, unique=True),
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_webhook_outbox_api_key_id", "webhook_outbox", ["api_key_id"])
    op.create_index("ix_webhook_outbox_status", "webhook_outbox", ["status"])
    op.create_index("ix_webhook_outbox_next_attempt_at", "webhook_outbox", ["next_attempt_at"])
    leases = op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("holder", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(leases, [{"name": "webhooks", "holder": "", "expires_at": datetime(1970, 1, 1, tzinfo=UTC)}])


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_webhook_outbox_next_attempt_at", "webhook_outbox")
    op.drop_index("ix_webhook_outbox_status", "webhook_outbox")
    op.drop_index("ix_webhook_outbox_api_key_id", "webhook_outbox")
    op.drop_table("webhook_outbox")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("webhook_secret")
        batch_op.drop_column("webhook_url")
