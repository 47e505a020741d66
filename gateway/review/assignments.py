"""Assignments: who a review is for. Team leads (seniors and admins) give open reviews to an agent who may
decide them, take them back, or give them to someone else; an agent may take reviews for itself. Every
change is a review event in the trail (to whom, from whom, by whom), written with the change."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.models import Agent, EventKind, Review, ReviewEvent, ReviewStatus, Role
from gateway.review.tiers import Tiers

MAX_AT_ONCE = 500


async def assign(
    session: AsyncSession, tiers: Tiers, now: datetime, review_ids: list[str], to: Agent | None, by: Agent
) -> list[Review]:
    """Assign every review in `review_ids` to `to` (None: to nobody), all or none; the reviews as they are now."""
    assert by.id is not None
    wanted = list(dict.fromkeys(review_ids))
    if not wanted:
        raise InvalidRequest("Choose at least one review.", param="review_ids")
    if len(wanted) > MAX_AT_ONCE:
        raise InvalidRequest(f"Assign at most {MAX_AT_ONCE} reviews at once.", param="review_ids")
    if by.role == Role.AGENT and (to is None or to.id != by.id):
        raise Forbidden("Agents take reviews for themselves; seniors and admins assign them to others.")
    if to is not None and not to.active:
        raise InvalidRequest(f"{to.username} is disabled.", param="to")
    found = {
        review.id: review for review in (await session.exec(select(Review).where(col(Review.id).in_(wanted)))).all()
    }
    names = {agent.id: agent.username for agent in (await session.exec(select(Agent))).all()}
    for review_id in wanted:
        review = found.get(review_id)
        if review is None:
            raise NotFound(f"No review with id {review_id!r}.")
        if review.status != ReviewStatus.OPEN:
            raise Conflict(f"Review {review_id} is decided already.")
        if not tiers.may_decide_review(by.role, review):
            raise Forbidden(f"The {by.role} role cannot assign reviews of the {review.tier!r} tier.")
        if to is not None and not tiers.may_decide_review(to.role, review):
            raise Forbidden(f"{to.username} ({to.role}) cannot decide reviews of the {review.tier!r} tier.")
    changed = []
    for review_id in wanted:
        review = found[review_id]
        if review.assigned_to == (to.id if to else None):
            continue
        detail = {"to": to.username if to else None, "from": names.get(review.assigned_to or -1)}
        review.assigned_to = to.id if to else None
        session.add(review)
        session.add(ReviewEvent(review_id=review_id, kind=EventKind.ASSIGNED, agent_id=by.id, detail=detail, at=now))
        changed.append(review)
    await session.commit()
    return [found[review_id] for review_id in wanted]
