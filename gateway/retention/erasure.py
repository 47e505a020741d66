"""Erasure on a customer's request (`hitl erase --user ID`): every exchange whose request names the customer
(at `HITL_RETENTION__USER_FIELD`, `user` by default) is removed with everything about it, and the trail
records how much was removed under a SHA-256 of the id, never the id itself.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import DataRemoval, Exchange
from gateway.retention import removal

BATCH = 1000  # exchanges read at a time while looking for the customer's


def named(request: Any, field: str) -> str | None:
    """The customer id a request names at the dotted `field`, as text; None when it names none."""
    value: Any = request
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return None if value is None or isinstance(value, dict | list) else str(value)


async def exchanges_of(session: AsyncSession, field: str, user: str) -> list[str]:
    """Every exchange whose request names `user` at `field`, read in batches by id."""
    found: list[str] = []
    after = ""
    while True:
        query = select(Exchange.id, Exchange.request).where(col(Exchange.id) > after).order_by(col(Exchange.id))
        rows = (await session.exec(query.limit(BATCH))).all()
        if not rows:
            return found
        found += [exchange_id for exchange_id, request in rows if named(request, field) == user]
        after = rows[-1][0]


def criterion(field: str, user: str) -> str:
    return f"{field} sha256:{hashlib.sha256(user.encode()).hexdigest()}"


async def erase(session: AsyncSession, field: str, user: str, dry_run: bool = False) -> tuple[int, Counter[str]]:
    """Remove the customer's conversations; how many exchanges matched, and the rows removed per table."""
    found = await exchanges_of(session, field, user)
    if dry_run or not found:
        return len(found), Counter()
    removed = await removal.remove(session, found)
    session.add(DataRemoval(kind="erase", criterion=criterion(field, user), removed=dict(removed)))
    await session.commit()
    return len(found), removed
