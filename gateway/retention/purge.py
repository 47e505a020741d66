"""Retention (`hitl purge`, and on a schedule in `hitl serve`): exchanges older than their API key's retention
period (or the global `HITL_RETENTION__DAYS`) lose their bodies, or their whole record with `keep: nothing`.
A held exchange or one under an open review waits until it is decided; an exchange purged once is not purged
again.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import ApiKey, DataRemoval, Exchange, ExchangeStatus, Review, ReviewStatus
from gateway.retention import removal
from gateway.settings import RetentionSettings


async def due(session: AsyncSession, settings: RetentionSettings, now: datetime) -> list[str]:
    """The exchanges past their retention period and not purged yet, none of them still awaiting a decision."""
    found: list[str] = []
    for key_id, days in (await session.exec(select(ApiKey.id, ApiKey.retention_days))).all():
        keep_for = settings.days if days is None else days
        if not keep_for:
            continue  # kept until erased
        still_open = select(Review.exchange_id).where(col(Review.status) == ReviewStatus.OPEN)
        query = select(Exchange.id).where(
            col(Exchange.api_key_id) == key_id,
            col(Exchange.created_at) < now - timedelta(days=keep_for),
            col(Exchange.purged_at).is_(None),
            col(Exchange.status) != ExchangeStatus.HELD,
            col(Exchange.id).not_in(still_open),
        )
        found += list((await session.exec(query)).all())
    return found


async def purge(
    session: AsyncSession, settings: RetentionSettings, now: datetime, dry_run: bool = False
) -> tuple[int, Counter[str]]:
    """Purge what is due; how many exchanges, and the rows emptied or removed per table."""
    found = await due(session, settings, now)
    if dry_run or not found:
        return len(found), Counter()
    if settings.keep == "nothing":
        removed = await removal.remove(session, found)
    else:
        removed = await removal.empty(session, found, now)
    session.add(DataRemoval(kind="purge", criterion=f"retention, keep {settings.keep}", removed=dict(removed)))
    await session.commit()
    return len(found), removed
