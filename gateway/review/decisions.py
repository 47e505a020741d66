"""The decision service: the one way a review gets decided, from the console or anywhere else.

A review moves from `open` to `decided` through a conditional UPDATE that also checks the claim, so when
two agents decide the same review at once exactly one wins and the other gets `ReviewAlreadyDecided`
(or `ClaimedByOther` while someone else holds it). The decision, the exchange's final text, the preference
pair and the audit-trail event commit together; waiting clients are woken after the commit.

An escalation is a decision too: the review moves to the next tier up with a reason and stays open.
Any agent may decide an audit review (a released answer sampled for a label); it changes nothing the
client received.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.models import (
    DECIDED_STATUS,
    Action,
    Agent,
    Decision,
    EventKind,
    Exchange,
    PreferencePair,
    Review,
    ReviewEvent,
    ReviewKind,
    Role,
    utcnow,
)
from gateway.proxy.holds import HoldHub
from gateway.review.claims import ClaimedByOther, ReviewAlreadyDecided, free_for, why_not

__all__ = ["REASON_TAGS", "ClaimedByOther", "Decided", "ReviewAlreadyDecided", "can_decide", "decide"]

# Why an answer was changed or escalated; the console offers these, exports carry them.
REASON_TAGS = ("wrong-facts", "incomplete", "tone", "policy", "unsafe", "off-topic", "formatting", "other")


@dataclass(frozen=True)
class Decided:
    decision: Decision
    exchange: Exchange
    review: Review
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


def _checked_tags(tags: list[str]) -> list[str]:
    unknown = sorted(set(tags) - set(REASON_TAGS))
    if unknown:
        raise InvalidRequest(f"Unknown reason tags {unknown}; use {list(REASON_TAGS)}.", param="tags")
    return sorted(set(tags), key=REASON_TAGS.index)


def _next_tier(review: Review, tiers: list[str]) -> str:
    if review.kind == ReviewKind.AUDIT or review.tier not in tiers:
        raise InvalidRequest("Audit reviews are labels, not holds: they cannot be escalated.", param="action")
    index = tiers.index(review.tier)
    if index + 1 >= len(tiers):
        raise InvalidRequest(f"{review.tier!r} is the highest tier: there is nowhere to escalate.", param="action")
    return tiers[index + 1]


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
    tags: list[str] | None = None,
    audit_tier: str | None = None,
) -> Decided:
    assert agent.id is not None
    tags = _checked_tags(tags or [])
    async with sessions() as session:
        review = await session.get(Review, review_id)
        if review is None:
            raise NotFound(f"No review with id {review_id!r}.")
        audit = review.kind == ReviewKind.AUDIT
        if not audit and not can_decide(agent.role, review.tier, tiers, audit_tier):
            raise Forbidden(f"A {agent.role} cannot decide reviews in the {review.tier!r} tier.")
        exchange = await session.get(Exchange, review.exchange_id)
        assert exchange is not None
        if action == Action.ESCALATE:
            return await _escalate(session, holds, review, exchange, agent, tiers, comment, tags)
        final = _final_text(action, text, exchange.candidate_text)
        now = utcnow()
        done = await session.exec(
            update(Review)
            .execution_options(synchronize_session=False)
            .where(col(Review.id) == review_id, col(Review.status) == "open", free_for(agent.id, now))
            .values(status="decided", decided_at=now, claimed_by=None, claim_expires_at=None)
        )
        if done.rowcount != 1:
            await session.rollback()
            raise await why_not(session, review_id)
        decision = Decision(
            review_id=review_id,
            agent_id=agent.id,
            action=action,
            text=None if action == Action.APPROVE else final,
            comment=comment,
            tags=tags,
            from_tier=review.tier,
        )
        session.add(decision)
        if not audit:
            # An audited answer reached the client already: the decision labels it, it delivers nothing.
            exchange.status = DECIDED_STATUS[action]
            exchange.final_text = final
            exchange.decided_at = now
            session.add(exchange)
        await session.flush()
        assert decision.id is not None
        pair = None
        if action in (Action.EDIT, Action.OVERRIDE):
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
        detail: dict[str, object] = {"action": str(action), "decision_id": decision.id, "tags": tags}
        if action != Action.APPROVE:
            detail["diff"] = _diff(exchange.candidate_text, final)
        session.add(ReviewEvent(review_id=review_id, kind=EventKind.DECIDED, agent_id=agent.id, detail=detail))
        await session.commit()
        holds.notify(review_id, exchange)  # the waiting client first; the agent's page can wait a round trip
        await session.refresh(review)
    return Decided(decision=decision, exchange=exchange, review=review, pair=pair)


async def _escalate(
    session: AsyncSession,
    holds: HoldHub,
    review: Review,
    exchange: Exchange,
    agent: Agent,
    tiers: list[str],
    reason: str,
    tags: list[str],
) -> Decided:
    assert agent.id is not None
    if not reason.strip():
        raise InvalidRequest("An escalation needs a reason for the next tier.", param="comment")
    source, target = review.tier, _next_tier(review, tiers)
    now = utcnow()
    done = await session.exec(
        update(Review)
        .execution_options(synchronize_session=False)
        .where(col(Review.id) == review.id, col(Review.status) == "open", free_for(agent.id, now))
        .where(col(Review.tier) == source)
        .values(tier=target, claimed_by=None, claim_expires_at=None)
    )
    if done.rowcount != 1:
        await session.rollback()
        raise await why_not(session, review.id)
    decision = Decision(
        review_id=review.id,
        agent_id=agent.id,
        action=Action.ESCALATE,
        comment=reason,
        tags=tags,
        from_tier=source,
        to_tier=target,
    )
    session.add(decision)
    detail = {"from": source, "to": target, "reason": reason, "tags": tags}
    session.add(ReviewEvent(review_id=review.id, kind=EventKind.ESCALATED, agent_id=agent.id, detail=detail))
    await session.commit()
    await session.refresh(review)
    return Decided(decision=decision, exchange=exchange, review=review, pair=None)


def _diff(before: str, after: str) -> str:
    """A unified diff for the audit trail: what the agent changed."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "candidate", "sent", lineterm="", n=1)
    return "\n".join(lines)
