"""Reviews assigned to an agent: team leads give work out, agents see theirs, "next" takes theirs first.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch_op:
        batch_op.add_column(sa.Column("assigned_to", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_reviews_assigned_to_agents", "agents", ["assigned_to"], ["id"])
    op.create_index("ix_reviews_assigned_to", "reviews", ["assigned_to"])


def downgrade() -> None:
    op.drop_index("ix_reviews_assigned_to", "reviews")
    with op.batch_alter_table("reviews") as batch_op:
        batch_op.drop_constraint("fk_reviews_assigned_to_agents", type_="foreignkey")
        batch_op.drop_column("assigned_to")
