"""Held tool calls are decided as tool calls: an edit keeps structured `tool_calls`, and preference pairs keep
both answers as assistant messages.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _assistant(message: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        kept["tool_calls"] = message["tool_calls"]
    return kept


def upgrade() -> None:
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.add_column(sa.Column("final_tool_calls", sa.JSON(), nullable=True))
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.add_column(sa.Column("tool_calls", sa.JSON(), nullable=True))
    with op.batch_alter_table("preference_pairs") as batch_op:
        batch_op.add_column(sa.Column("chosen_message", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("rejected_message", sa.JSON(), nullable=True))

    # Pairs made before: chosen was always text; rejected was the candidate, whose tool calls were stored
    # as a JSON string, so it is rebuilt from the exchange's stored response.
    bind = op.get_bind()
    pairs = sa.table(
        "preference_pairs",
        sa.column("id", sa.Integer),
        sa.column("exchange_id", sa.String),
        sa.column("chosen", sa.String),
        sa.column("chosen_message", sa.JSON),
        sa.column("rejected_message", sa.JSON),
    )
    exchanges = sa.table("exchanges", sa.column("id", sa.String), sa.column("response", sa.JSON))
    rows = bind.execute(
        sa.select(pairs.c.id, pairs.c.chosen, exchanges.c.response).join(
            exchanges, exchanges.c.id == pairs.c.exchange_id
        )
    ).all()
    for pair_id, chosen, response in rows:
        if isinstance(response, str):
            response = json.loads(response)
        candidate = ((response or {}).get("choices") or [{}])[0].get("message") or {}
        bind.execute(
            pairs.update()
            .where(pairs.c.id == pair_id)
            .values(
                chosen_message={"role": "assistant", "content": chosen},
                rejected_message=_assistant(candidate),
            )
        )
    with op.batch_alter_table("preference_pairs") as batch_op:
        batch_op.alter_column("chosen_message", existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column("rejected_message", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("preference_pairs") as batch_op:
        batch_op.drop_column("rejected_message")
        batch_op.drop_column("chosen_message")
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.drop_column("tool_calls")
    with op.batch_alter_table("exchanges") as batch_op:
        batch_op.drop_column("final_tool_calls")
