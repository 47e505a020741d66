"""Progressive release: how much of a streamed answer reached the client before the rest was held.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        # Characters of the candidate's text streamed to the client before the rest was held (the model's field
        # says so; a column comment here would differ from the model's, which has none).
        batch_op.add_column(sa.Column("released_chars", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.drop_column("released_chars")
