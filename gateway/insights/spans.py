"""Time as the database computes it, so a figure over a period's rows reads numbers, never a datetime per row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel.ext.asyncio.session import AsyncSession


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def seconds_between(session: AsyncSession, start: Any, end: Any) -> Any:
    """`end - start` in seconds (SQLite's julianday() is exact to the millisecond)."""
    if _postgres(session):
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0
