"""Each agent's progress today: the decisions (approvals, edits, overrides, escalations) made since midnight
UTC, per agent, for the queue's header."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Agent, Decision


async def today(session: AsyncSession, now: datetime) -> dict[str, int]:
    """Decisions per agent name since the start of `now`'s UTC day, busiest first."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    query = (
        select(Agent.username, func.count())
        .join(Decision, col(Decision.agent_id) == col(Agent.id))
        .where(col(Decision.created_at) >= midnight)
        .group_by(col(Agent.username))
    )
    counts = {name: int(count) for name, count in (await session.exec(query)).all()}
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
