"""The one guarded update every claim and decision goes through.

A review row changes only through a conditional UPDATE: still open, and free for this agent (unclaimed,
claimed by this agent, or its claim ran out), plus whatever the caller adds. When two agents race, the
database lets exactly one UPDATE touch the row; the other learns why it could not, on SQLite as on
PostgreSQL, whatever the replica.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import Conflict, NotFound
from gateway.models import Agent, Review, ReviewStatus


class ReviewAlreadyDecided(Conflict):
    pass


class ClaimedByOther(Conflict):
    pass


def free_for(agent_id: int, now: datetime) -> ColumnElement[bool]:
    """SQL: the review is unclaimed, claimed by this agent, or its claim ran out."""
    return or_(
        col(Review.claimed_by).is_(None),
        col(Review.claimed_by) == agent_id,
        col(Review.claim_expires_at) < now,
    )


async def why_not(session: AsyncSession, review_id: str) -> Conflict | NotFound:
    """The error for a review that a guarded update could not touch."""
    review = await session.get(Review, review_id, populate_existing=True)
    if review is None:
        return NotFound(f"No review with id {review_id!r}.")
    if review.status != ReviewStatus.OPEN:
        return ReviewAlreadyDecided(f"Review {review_id} has already been decided by someone else.")
    holder = await session.get(Agent, review.claimed_by) if review.claimed_by else None
    name = holder.username if holder else "another agent"
    return ClaimedByOther(f"{name} is working on this review; take the next one.")


async def guarded_update(
    session: AsyncSession,
    review_id: str,
    agent_id: int,
    now: datetime,
    values: dict[str, Any],
    *also: ColumnElement[bool],
) -> None:
    """Set `values` on the review if it is open, free for the agent and meets `also`; else roll back and
    raise `ReviewAlreadyDecided`, `ClaimedByOther` or `NotFound`. The caller commits."""
    done = await session.exec(
        update(Review)
        .execution_options(synchronize_session=False)
        .where(col(Review.id) == review_id, col(Review.status) == ReviewStatus.OPEN, free_for(agent_id, now), *also)
        .values(**values)
    )
    if done.rowcount != 1:
        await session.rollback()
        raise await why_not(session, review_id)
