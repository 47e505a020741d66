"""Claims: an agent's lease on a review while its page is open.

Opening a review claims it for `HITL_CLAIM_LEASE` seconds; the open page renews the lease and gives it
back when the agent leaves; an unrenewed lease simply runs out. Every change is one guarded update
(`guard.py`), so two agents never hold the same review.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, exists, or_
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock
from gateway.errors import Conflict, NotFound
from gateway.models import Agent, EventKind, PendingDecision, Review, ReviewEvent, ReviewStatus
from gateway.review import urgency
from gateway.review.guard import guarded_update

Sessions = async_sessionmaker[AsyncSession]


async def claim(sessions: Sessions, review_id: str, agent: Agent, lease: float, clock: Clock) -> Review:
    """Claim a review, or renew this agent's claim on it."""
    assert agent.id is not None
    now = clock.now()
    async with sessions() as session:
        before = await session.get(Review, review_id)
        expires = now + timedelta(seconds=lease)
        await guarded_update(session, review_id, agent.id, now, {"claimed_by": agent.id, "claim_expires_at": expires})
        assert before is not None
        renewed = before.claimed_by == agent.id and before.claim_expires_at is not None
        if not renewed:
            session.add(ReviewEvent(review_id=review_id, kind=EventKind.CLAIMED, agent_id=agent.id, at=now))
        await session.commit()
        review = await session.get(Review, review_id, populate_existing=True)
    assert review is not None
    return review


async def release(sessions: Sessions, review_id: str, agent: Agent, clock: Clock) -> bool:
    """Give a claim back (the agent left the page). False when this agent held no claim on it."""
    assert agent.id is not None
    now = clock.now()
    async with sessions() as session:
        try:
            mine = col(Review.claimed_by) == agent.id
            await guarded_update(
                session, review_id, agent.id, now, {"claimed_by": None, "claim_expires_at": None}, mine
            )
        except (Conflict, NotFound):
            return False
        session.add(ReviewEvent(review_id=review_id, kind=EventKind.UNCLAIMED, agent_id=agent.id, at=now))
        await session.commit()
    return True


async def next_review(
    sessions: Sessions, agent: Agent, tier: str, lease: float, clock: Clock, skip: str | None = None
) -> Review | None:
    """Claim the most urgent open review of `tier` (`urgency.py`) that nobody else holds, those assigned to this
    agent first, never one assigned to someone else; `skip` is the review the agent is moving on from. The
    agent's own claims count as free (a tab closed without releasing them must not hide them for a lease).
    None when there is none."""
    assert agent.id is not None
    for _ in range(5):  # someone may take a candidate between the look and the claim: look again
        now = clock.now()
        free = or_(
            col(Review.claimed_by).is_(None), col(Review.claim_expires_at) < now, col(Review.claimed_by) == agent.id
        )
        undecided = ~exists().where(col(PendingDecision.review_id) == col(Review.id))  # not in its undo window
        query = (
            select(Review.id)
            .where(col(Review.status) == ReviewStatus.OPEN, col(Review.tier) == tier, free, undecided)
            .where(or_(col(Review.assigned_to).is_(None), col(Review.assigned_to) == agent.id))
            .order_by(case((col(Review.assigned_to) == agent.id, 0), else_=1), *urgency.most_urgent_first(now))
            .limit(10)
        )
        if skip is not None:
            query = query.where(col(Review.id) != skip)
        async with sessions() as session:
            candidates = (await session.exec(query)).all()
        if not candidates:
            return None
        for review_id in candidates:
            try:
                return await claim(sessions, review_id, agent, lease, clock)
            except (Conflict, NotFound):
                continue
    return None
