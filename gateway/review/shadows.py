"""Reviews that check the reviewers: each on a copy of a held exchange, served as an ordinary held review.

- Gold: an admin marks a decided held review gold (`mark`): its last decision is the right one. After each
  decision an agent makes on an ordinary review, with the chance `gold_share`, a gold item of a tier the agent
  decides, which the agent neither decided nor was served before, is copied into that agent's queue (assigned to
  them), unless one already waits there.
- Second review: after a held answer is decided, with the chance `second_review_rate`, a copy goes to another
  agent who may decide its tier (assigned to them); the first decider may not decide it.

A copy's exchange names its original (`copy_of`) and its review says which kind it is (`shadow`). No client waits
on it, and its decision makes no webhook, approved answer, preference pair or export; the period's figures count
only originals. `gateway.insights.agreement` reads the pairs of decisions back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, exists
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.models import (
    Action,
    Agent,
    Decision,
    EventKind,
    Exchange,
    ExchangeStatus,
    GoldItem,
    Review,
    ReviewEvent,
    ReviewKind,
    ReviewStatus,
    Route,
    Shadow,
)
from gateway.review.tiers import Tiers
from gateway.settings import QualitySettings

CLOSING = (Action.APPROVE, Action.EDIT, Action.OVERRIDE)
# What a copy does not take from its original: what happened to the original after it was asked.
NOT_COPIED = {"id", "idempotency_key", "request_hash", "status", "final_text", "final_tool_calls",
              "deadline_outcome", "decided_at", "purged_at", "created_at", "copy_of"}  # fmt: skip


async def closing_decision(session: AsyncSession, review_id: str) -> Decision | None:
    """The decision that closed a review (its last approve, edit or override)."""
    query = (
        select(Decision)
        .where(col(Decision.review_id) == review_id, col(Decision.action).in_(list(CLOSING)))
        .order_by(col(Decision.id).desc())
    )
    return (await session.exec(query)).first()


async def mark(session: AsyncSession, review_id: str, admin: Agent, now: datetime) -> GoldItem:
    """Mark a decided held review gold (again, when it was unmarked)."""
    assert admin.id is not None
    review = await session.get(Review, review_id)
    if review is None:
        raise NotFound(f"No review with id {review_id!r}.")
    if review.kind != ReviewKind.HOLD or review.shadow is not None:
        raise InvalidRequest("Only a held answer's own review can be gold: not an audit, not a copy.", param="review")
    if review.status != ReviewStatus.DECIDED or await closing_decision(session, review_id) is None:
        raise Conflict("Only a decided review can be gold: its decision is what agents are scored against.")
    item = (await session.exec(select(GoldItem).where(col(GoldItem.review_id) == review_id))).first()
    if item is None:
        item = GoldItem(review_id=review_id, marked_by=admin.id, marked_at=now)
    item.active, item.marked_by, item.marked_at = True, admin.id, now
    session.add(item)
    await session.commit()
    return item


async def unmark(session: AsyncSession, review_id: str) -> None:
    """Stop serving a gold item (the copies already decided keep their scores)."""
    item = (await session.exec(select(GoldItem).where(col(GoldItem.review_id) == review_id))).first()
    if item is None or not item.active:
        raise NotFound(f"Review {review_id!r} is not gold.")
    item.active = False
    session.add(item)
    await session.commit()


async def is_gold(session: AsyncSession, review_id: str) -> bool:
    found = select(GoldItem.id).where(col(GoldItem.review_id) == review_id, col(GoldItem.active).is_(True))
    return (await session.exec(found)).first() is not None


def _copy(exchange: Exchange, review: Review, shadow: Shadow, to: int, now: datetime) -> tuple[Exchange, Review]:
    kept = {name: getattr(exchange, name) for name in Exchange.model_fields if name not in NOT_COPIED}
    copied = Exchange(**kept, copy_of=exchange.id, created_at=now)
    copied.status, copied.route = ExchangeStatus.HELD, Route.HOLD
    wait = review.deadline_at - review.created_at
    return copied, Review(exchange_id=copied.id, api_key_id=review.api_key_id, tier=review.tier, created_at=now,
                          deadline_at=now + wait, assigned_to=to, shadow=shadow)  # fmt: skip


async def first_decider(session: AsyncSession, review: Review) -> int | None:
    """Who decided the original of a second review."""
    original = aliased(Review)
    copy = aliased(Exchange)
    query = (
        select(Decision.agent_id)
        .join(original, col(original.id) == col(Decision.review_id))
        .join(copy, col(copy.copy_of) == col(original.exchange_id))
        .where(col(copy.id) == review.exchange_id, col(Decision.action).in_(list(CLOSING)))
        .order_by(col(Decision.id).desc())
    )
    return (await session.exec(query)).first()


async def may_decide(session: AsyncSession, review: Review, agent: Agent) -> None:
    """A second review is independent: the agent who decided the first may not decide it."""
    if review.shadow == Shadow.SECOND and await first_decider(session, review) == agent.id:
        raise Forbidden("You decided this answer's first review: its second review is another agent's.")


async def after_decision(
    session: AsyncSession,
    review: Review,
    exchange: Exchange,
    agent: Agent,
    tiers: Tiers,
    settings: QualitySettings,
    draw: Callable[[], float],
    now: datetime,
) -> list[Review]:
    """The copies this decision brings: a second review of the answer, a gold item for the agent; committed."""
    if review.shadow is not None or exchange.copy_of is not None:
        return []  # a check is not checked again
    made: list[Review] = []
    if review.kind == ReviewKind.HOLD and settings.second_review_rate and draw() < settings.second_review_rate:
        second = await _second_reviewer(session, review.tier, agent, tiers, draw)
        if second is not None:
            made.append(_add(session, *_copy(exchange, review, Shadow.SECOND, second.id or 0, now), second, now))
    if settings.gold_share and draw() < settings.gold_share:
        gold = await _gold_for(session, agent, tiers, draw)
        if gold is not None:
            original, source = gold
            made.append(_add(session, *_copy(source, original, Shadow.GOLD, agent.id or 0, now), agent, now))
    if made:
        await session.commit()
    return made


def _add(session: AsyncSession, exchange: Exchange, review: Review, to: Agent, now: datetime) -> Review:
    """The copy, with the trail an ordinary review assigned to `to` has: held into its tier's queue, then assigned
    (by no one: the gateway gave it, and the trail says no more than that), so its review page does not give the
    check away by an empty trail."""
    session.add(exchange)
    session.add(review)
    session.add(ReviewEvent(review_id=review.id, kind=EventKind.HELD, at=now, detail={"tier": review.tier}))
    assigned = {"to": to.username, "from": None}
    session.add(ReviewEvent(review_id=review.id, kind=EventKind.ASSIGNED, at=now, detail=assigned))
    return review


async def _second_reviewer(
    session: AsyncSession, tier: str, first: Agent, tiers: Tiers, draw: Callable[[], float]
) -> Agent | None:
    others = (await session.exec(select(Agent).where(col(Agent.active).is_(True), col(Agent.id) != first.id))).all()
    able = sorted((agent for agent in others if tiers.may_decide(agent.role, tier)), key=lambda agent: agent.id or 0)
    return able[min(int(draw() * len(able)), len(able) - 1)] if able else None


async def _gold_for(
    session: AsyncSession, agent: Agent, tiers: Tiers, draw: Callable[[], float]
) -> tuple[Review, Exchange] | None:
    """A gold item for `agent`: of a tier the agent decides, which the agent neither decided nor was served;
    none while a gold copy already waits in the agent's queue."""
    waiting = select(Review.id).where(col(Review.shadow) == Shadow.GOLD, col(Review.assigned_to) == agent.id,
                                      col(Review.status) == ReviewStatus.OPEN)  # fmt: skip
    if (await session.exec(waiting)).first() is not None:
        return None
    served = aliased(Review)
    copy = aliased(Exchange)
    was_served = (
        exists()
        .where(col(copy.copy_of) == col(Review.exchange_id), col(served.exchange_id) == col(copy.id))
        .where(col(served.assigned_to) == agent.id)
    )
    decided = exists().where(and_(col(Decision.review_id) == col(Review.id), col(Decision.agent_id) == agent.id))
    query = (
        select(Review, Exchange)
        .join(GoldItem, col(GoldItem.review_id) == col(Review.id))
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .where(col(GoldItem.active).is_(True), ~was_served, ~decided, col(Exchange.purged_at).is_(None))
        .order_by(col(GoldItem.id))
    )
    found = [(review, exchange) for review, exchange in (await session.exec(query)).all()
             if tiers.may_decide(agent.role, review.tier)]  # fmt: skip
    return found[min(int(draw() * len(found)), len(found) - 1)] if found else None
