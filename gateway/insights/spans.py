"""Time as the database computes it, so a figure over a period's rows reads numbers, never a datetime per row:
the seconds between two moments, and the hour a moment falls in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, cast, func
from sqlmodel.ext.asyncio.session import AsyncSession


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def seconds_between(session: AsyncSession, start: Any, end: Any) -> Any:
    """`end - start` in seconds (SQLite's julianday() is exact to the millisecond)."""
    if _postgres(session):
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def hour(session: AsyncSession, when: Any) -> Any:
    """Whole hours from a fixed origin to `when`: the same number for two moments of the same UTC hour."""
    if _postgres(session):
        return cast(func.floor(func.extract("epoch", when) / 3600), Integer)
    return cast(func.julianday(when) * 24, Integer)
