"""Gold items and second reviews: a decided review an admin marks gold, and reviews on copies of exchanges (a gold
item served to an agent, the second independent review of a held answer) whose decisions reach no client.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The models' fields say what each column is; a column comment here would differ from the models', which have none.
    # Added in place with its reference, never by copying the table (a million rows on SQLite): SQLite adds a
    # column that references another in place when it is NULL everywhere, which alembic will not write for it.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE exchanges ADD COLUMN copy_of VARCHAR CONSTRAINT fk_exchanges_copy_of REFERENCES exchanges (id)"
        )
    else:
        copy_of = sa.ForeignKey("exchanges.id", name="fk_exchanges_copy_of")
        op.add_column("exchanges", sa.Column("copy_of", sa.String(), copy_of, nullable=True))
    # Copies are few: only they are indexed, so a query of the traffic (`copy_of IS NULL`) never uses it.
    op.create_index("ix_exchanges_copy_of", "exchanges", ["copy_of"], sqlite_where=sa.text("copy_of IS NOT NULL"),
                    postgresql_where=sa.text("copy_of IS NOT NULL"))  # fmt: skip
    with op.batch_alter_table("reviews") as batch_op:
        batch_op.add_column(sa.Column("shadow", sa.String(length=24), nullable=True))
    op.create_index("ix_reviews_shadow", "reviews", ["shadow"], sqlite_where=sa.text("shadow IS NOT NULL"),
                    postgresql_where=sa.text("shadow IS NOT NULL"))  # fmt: skip
    op.create_table(
        "gold_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("review_id", sa.String(), sa.ForeignKey("reviews.id"), nullable=False, unique=True),
        sa.Column("marked_by", sa.Integer(), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gold_items")
    op.drop_index("ix_reviews_shadow", "reviews")
    with op.batch_alter_table("reviews") as batch_op:
        batch_op.drop_column("shadow")
    op.drop_index("ix_exchanges_copy_of", "exchanges")
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("exchanges") as batch_op:
        if not sqlite:  # on SQLite the column takes its reference with it
            batch_op.drop_constraint("fk_exchanges_copy_of", type_="foreignkey")
        batch_op.drop_column("copy_of")
