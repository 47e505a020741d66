"""Claims: an agent's lease on a review while its page is open.

Opening a review claims it for `HITL_CLAIM_LEASE` seconds; the open page renews the lease and gives it
back when the agent leaves; an unrenewed lease simply runs out. Every change is one conditional UPDATE,
so two agents never hold the same review, on SQLite as on PostgreSQL, whatever the replica.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import Conflict, NotFound
from gateway.models import Agent, EventKind, Review, ReviewEvent, utcnow

Sessions = async_sessionmaker[AsyncSession]


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
    """The error for a review that a conditional update could not touch."""
    review = await session.get(Review, review_id, populate_existing=True)
    if review is None:
        return NotFound(f"No review with id {review_id!r}.")
    if review.status != "open":
        return ReviewAlreadyDecided(f"Review {review_id} has already been decided by someone else.")
    holder = await session.get(Agent, review.claimed_by) if review.claimed_by else None
    name = holder.username if holder else "another agent"
    return ClaimedByOther(f"{name} is working on this review; take the next one.")


async def claim(sessions: Sessions, review_id: str, agent: Agent, lease: float) -> Review:
    """Claim a review, or renew this agent's claim on it."""
    assert agent.id is not None
    now = utcnow()
    async with sessions() as session:
        before = await session.get(Review, review_id)
        done = await session.exec(
            update(Review)
            .execution_options(synchronize_session=False)
            .where(col(Review.id) == review_id, col(Review.status) == "open", free_for(agent.id, now))
            .values(claimed_by=agent.id, claim_expires_at=now + timedelta(seconds=lease))
        )
        if done.rowcount != 1:
            await session.rollback()
            raise await why_not(session, review_id)
        assert before is not None
        renewed = before.claimed_by == agent.id and before.claim_expires_at is not None
        if not renewed:
            session.add(ReviewEvent(review_id=review_id, kind=EventKind.CLAIMED, agent_id=agent.id))
        await session.commit()
        review = await session.get(Review, review_id, populate_existing=True)
    assert review is not None
    return review


async def release(sessions: Sessions, review_id: str, agent: Agent) -> bool:
    """Give a claim back (the agent left the page). False when this agent held no claim on it."""
    async with sessions() as session:
        done = await session.exec(
            update(Review)
            .execution_options(synchronize_session=False)
            .where(col(Review.id) == review_id, col(Review.claimed_by) == agent.id, col(Review.status) == "open")
            .values(claimed_by=None, claim_expires_at=None)
        )
        if done.rowcount != 1:
            return False
        session.add(ReviewEvent(review_id=review_id, kind=EventKind.UNCLAIMED, agent_id=agent.id))
        await session.commit()
    return True


async def next_review(sessions: Sessions, agent: Agent, tier: str, lease: float) -> Review | None:
    """Claim the oldest open review of `tier` that nobody holds (this agent's own claims count as held,
    so "next" moves on); None when there is none."""
    assert agent.id is not None
    for _ in range(5):  # someone may take a candidate between the look and the claim: look again
        now = utcnow()
        async with sessions() as session:
            candidates = (
                await session.exec(
                    select(Review.id)
                    .where(col(Review.status) == "open", col(Review.tier) == tier)
                    # Nobody's, or a claim that ran out; not one this agent holds already (that is "next").
                    .where(or_(col(Review.claimed_by).is_(None), col(Review.claim_expires_at) < now))
                    .order_by(col(Review.created_at))
                    .limit(10)
                )
            ).all()
        if not candidates:
            return None
        for review_id in candidates:
            try:
                return await claim(sessions, review_id, agent, lease)
            except (Conflict, NotFound):
                continue
    return None
