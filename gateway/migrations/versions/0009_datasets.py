"""Datasets: each closing decision's prompt key (deduplication and the train/test split sort by it), and API
keys with a role, so a data pipeline's key reads exports and nothing else.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from gateway.conversation.prompt_keys import prompt_key

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH = 1000


def _request(value: Any) -> dict[str, Any]:
    found = json.loads(value) if isinstance(value, str | bytes) else value
    return found if isinstance(found, dict) else {}


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=24), nullable=False, server_default="client"))
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.add_column(sa.Column("prompt_key", sa.String(length=64), nullable=True))
    op.create_index("ix_decisions_prompt_key", "decisions", ["prompt_key"])
    # Existing closing decisions get their key from their exchange's request, a batch at a time.
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.text(
                "SELECT d.id, e.request FROM decisions d JOIN reviews r ON r.id = d.review_id"
                " JOIN exchanges e ON e.id = r.exchange_id"
                " WHERE d.id > :last AND d.action IN ('approve', 'edit', 'override') ORDER BY d.id LIMIT :batch"
            ),
            {"last": last, "batch": BATCH},
        ).all()
        if not rows:
            break
        keys = [{"id": row[0], "key": prompt_key(_request(row[1]))} for row in rows]
        connection.execute(sa.text("UPDATE decisions SET prompt_key = :key WHERE id = :id"), keys)
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_decisions_prompt_key", "decisions")
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.drop_column("prompt_key")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("role")
