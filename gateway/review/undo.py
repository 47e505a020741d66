"""The undo window: a decision made in the console takes effect `HITL_UNDO_SECONDS` later, unless the agent
takes it back first. Meanwhile it waits as a `PendingDecision`, checked as the decision itself would be (so a
refusal comes at once), with the review still open and claimed by its agent; when the window closes, any
process of the gateway makes it (`due`), and the client is answered then. Taking it back writes `undone` in the
review's trail and hands the agent's draft back; nothing was sent."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import Conflict
from gateway.models import Action, Agent, EventKind, PendingDecision, Review, ReviewEvent, ReviewStatus


async def defer(
    session: AsyncSession,
    review: Review,
    agent: Agent,
    now: datetime,
    seconds: float,
    lease: float,
    *,
    action: Action,
    text: str | None,
    arguments: dict[str, str] | None,
    comment: str,
    tags: list[str],
) -> PendingDecision:
    """Keep the decision for `seconds`; the agent's claim lasts until it is made (and a lease beyond)."""
    assert agent.id is not None
    if review.status != ReviewStatus.OPEN:
        raise Conflict("This review is decided already.")
    expires = review.claim_expires_at
    if review.claimed_by not in (None, agent.id) and expires is not None and expires > now:
        raise Conflict("Someone else holds this review.")
    due = now + timedelta(seconds=seconds)
    pending = PendingDecision(
        review_id=review.id,
        agent_id=agent.id,
        action=action,
        text=text,
        arguments=arguments,
        comment=comment,
        tags=tags,
        created_at=now,
        due_at=due,
    )
    review.claimed_by, review.claim_expires_at = agent.id, due + timedelta(seconds=lease)
    session.add(review)
    session.add(pending)
    try:
        await session.commit()
    except IntegrityError:  # another decision on it is in its window already
        await session.rollback()
        raise Conflict("Someone has just decided this review.") from None
    await session.refresh(pending)
    return pending


async def pending(session: AsyncSession, review_id: str) -> PendingDecision | None:
    return (await session.exec(select(PendingDecision).where(col(PendingDecision.review_id) == review_id))).first()


async def take_back(session: AsyncSession, review_id: str, agent: Agent, now: datetime) -> PendingDecision | None:
    """Undo this agent's decision on the review while it waits; None when there is none to undo (made already,
    or someone else's)."""
    assert agent.id is not None
    found = await pending(session, review_id)
    if found is None or found.agent_id != agent.id or found.due_at <= now:
        return None
    gone = await session.exec(
        delete(PendingDecision).where(col(PendingDecision.id) == found.id, col(PendingDecision.due_at) > now)
    )
    if gone.rowcount != 1:
        return None  # made meanwhile, by this process or another
    detail = {"action": str(found.action)}
    session.add(ReviewEvent(review_id=review_id, kind=EventKind.UNDONE, agent_id=agent.id, detail=detail, at=now))
    await session.commit()
    return found


async def due(session: AsyncSession, now: datetime) -> list[PendingDecision]:
    """The decisions whose window has closed, oldest first."""
    query = select(PendingDecision).where(col(PendingDecision.due_at) <= now).order_by(col(PendingDecision.due_at))
    return list((await session.exec(query.limit(100))).all())


async def settled(session: AsyncSession, pending_id: int) -> bool:
    """Remove a pending decision about to be made, in the transaction that makes it; False when it is gone (made
    by another process, or undone)."""
    gone = await session.exec(delete(PendingDecision).where(col(PendingDecision.id) == pending_id))
    return bool(gone.rowcount == 1)
