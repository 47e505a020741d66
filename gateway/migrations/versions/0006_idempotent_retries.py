"""Retries join the exchange they repeat: exchanges keep the client's Idempotency-Key and a hash of the body.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=False, server_default=""))
        batch_op.create_index("ix_exchanges_idempotency_key", ["idempotency_key"])
        batch_op.create_index("ix_exchanges_request_hash", ["request_hash"])


def downgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.drop_index("ix_exchanges_request_hash")
        batch_op.drop_index("ix_exchanges_idempotency_key")
        batch_op.drop_column("request_hash")
        batch_op.drop_column("idempotency_key")
