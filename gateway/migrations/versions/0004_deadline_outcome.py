"""Exchanges record what a client got when its wait ran out (on_deadline).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.add_column(sa.Column("deadline_outcome", sa.String(length=24), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.drop_column("deadline_outcome")
