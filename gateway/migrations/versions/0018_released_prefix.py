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
        batch_op.add_column(
            sa.Column(
                "released_chars",
                sa.Integer(),
                nullable=True,
                comment="Characters of the candidate's text streamed to the client before the rest was held.",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.drop_column("released_chars")
