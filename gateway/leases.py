"""A lease: at most one process at a time runs a named job (the webhook sender), and another takes over when
the holder stops renewing (it crashed, or was killed). One guarded UPDATE takes or renews it."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Lease


async def hold(
    sessions: async_sessionmaker[AsyncSession], name: str, holder: str, seconds: float, now: datetime
) -> bool:
    """Take the lease, or renew it for `seconds` if `holder` has it; False while another holder's is valid."""
    async with sessions() as session:
        taken = await session.exec(
            update(Lease)
            .where(col(Lease.name) == name, or_(col(Lease.holder) == holder, col(Lease.expires_at) < now))
            .values(holder=holder, expires_at=now + timedelta(seconds=seconds))
        )
        await session.commit()
    return taken.rowcount == 1
