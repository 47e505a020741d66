"""Upstream failures are recorded: a failed exchange keeps why (error kind) and the provider's HTTP status.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.add_column(sa.Column("error_kind", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("upstream_status", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.drop_column("upstream_status")
        batch_op.drop_column("error_kind")
