"""The bodies PostgreSQL stores out of line (TOAST) compressed with LZ4 instead of pglz, where the server has it.

An answer with every token's top-5 logprobs is about 85 KB of JSON, compressed on every insert, in the commit the
client waits for. Measured here (PostgreSQL 15, one such row per INSERT): 1.96 ms per INSERT with pglz, 0.91 ms
with LZ4, for a value about 10% larger (21 KB against 19 KB). Rows written before keep their pglz values and read
as before. SQLite does not compress: nothing to do.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The request path's large values: the conversation asked, the answer proposed, its text, and the webhook body.
BODIES = {"exchanges": ["request", "response", "candidate_text"], "webhook_outbox": ["payload"]}


def _has_lz4() -> bool:
    """PostgreSQL 14 or newer built with LZ4 (Debian's is); elsewhere the columns keep the server's default."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    methods = bind.execute(sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"))
    return "lz4" in (methods.scalar() or [])


def _compress(method: str) -> None:
    for table, columns in BODIES.items():
        for column in columns:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def upgrade() -> None:
    if _has_lz4():
        _compress("lz4")


def downgrade() -> None:
    if _has_lz4():
        _compress("default")
