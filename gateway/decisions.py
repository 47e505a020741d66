"""The decision service: the one way a review gets decided, from the console or anywhere else.

A review moves from `open` to `decided` through a conditional UPDATE, so when two agents decide the same
review at once exactly one wins and the other gets `ReviewAlreadyDecided`. Any agent may decide an audit
review (a released answer sampled for a label); it changes nothing the client received. The decision, the exchange's
final text and the preference pair commit together; waiting clients are woken after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.holds import HoldHub
from gateway.models import (
    DECIDED_STATUS,
    Action,
    Agent,
    Decision,
    Exchange,
    PreferencePair,
    Review,
    ReviewKind,
    Role,
    utcnow,
)


class ReviewAlreadyDecided(Conflict):
    pass


@dataclass(frozen=True)
class Decided:
    decision: Decision
    exchange: Exchange
    pair: PreferencePair | None


def can_decide(role: Role, tier: str, tiers: list[str], audit_tier: str | None = None) -> bool:
    """Agents decide the lowest tier, seniors the two lowest, admins every tier; anyone the audit queue."""
    if role == Role.ADMIN or (audit_tier is not None and tier == audit_tier):
        return True
    reach = {Role.AGENT: 1, Role.SENIOR: 2}[Role(role)]
    return tier in tiers[:reach]


def _final_text(action: Action, text: str | None, candidate: str) -> str:
    if action == Action.APPROVE:
        return candidate
    if text is None or not text.strip():
        raise InvalidRequest(f"An {action} needs the text the client should receive.", param="text")
    if text.strip() == candidate.strip():
        # A pair whose chosen and rejected answers are the same teaches a model nothing.
        raise InvalidRequest(f"The {action} changes nothing: approve the answer instead.", param="text")
    return text


async def decide(
    sessions: async_sessionmaker[AsyncSession],
    holds: HoldHub,
    *,
    review_id: str,
    agent: Agent,
    action: Action,
    tiers: list[str],
    text: str | None = None,
    comment: str = "",
) -> Decided:
    async with sessions() as session:
        review = await session.get(Review, review_id)
        if review is None:
            raise NotFound(f"No review with id {review_id!r}.")
        audit = review.kind == ReviewKind.AUDIT
        if not audit and not can_decide(agent.role, review.tier, tiers):
            raise Forbidden(f"A {agent.role} cannot decide reviews in the {review.tier!r} tier.")
        exchange = await session.get(Exchange, review.exchange_id)
        assert exchange is not None
        final = _final_text(action, text, exchange.candidate_text)
        now = utcnow()
        claimed = await session.exec(
            update(Review)
            .where(Review.id == review_id, Review.status == "open")
            .values(status="decided", decided_at=now)
        )
        if claimed.rowcount != 1:
            await session.rollback()
            raise ReviewAlreadyDecided(f"Review {review_id} has already been decided by someone else.")
        assert agent.id is not None
        decision = Decision(
            review_id=review_id,
            agent_id=agent.id,
            action=action,
            text=None if action == Action.APPROVE else final,
            comment=comment,
        )
        session.add(decision)
        if not audit:
            # An audited answer reached the client already: the decision labels it, it delivers nothing.
            exchange.status = DECIDED_STATUS[action]
            exchange.final_text = final
            exchange.decided_at = now
            session.add(exchange)
        await session.flush()
        pair = None
        if action in (Action.EDIT, Action.OVERRIDE):
            assert decision.id is not None
            prompt = [dict(message) for message in exchange.request.get("messages", [])]
            pair = PreferencePair(
                exchange_id=exchange.id,
                decision_id=decision.id,
                prompt=prompt,
                chosen=final,
                rejected=exchange.candidate_text,
                action=action,
            )
            session.add(pair)
        await session.commit()
    holds.notify(review_id)
    return Decided(decision=decision, exchange=exchange, pair=pair)
