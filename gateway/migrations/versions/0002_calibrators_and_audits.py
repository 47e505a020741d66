"""calibrators table; exchanges record their calibrator; reviews have a kind and an audit rate

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calibrators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column(
            "metrics", sa.JSON(), nullable=False, comment="Figures `hitl calibrate` printed when it fitted this one."
        ),
        sa.Column("labels", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("exchanges", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "calibrator",
                sqlmodel.sql.sqltypes.AutoString(length=64),
                nullable=False,
                server_default="default",
            )
        )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=24), nullable=False, server_default="hold"))
        batch_op.add_column(sa.Column("audit_rate", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_column("audit_rate")
        batch_op.drop_column("kind")
    with op.batch_alter_table("exchanges", schema=None) as batch_op:
        batch_op.drop_column("calibrator")
    op.drop_table("calibrators")
