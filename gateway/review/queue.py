"""The queue as agents see it: the open reviews of a tier with their exchanges and holders, sorted and
filtered, the count per tier, and the version number live updates watch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from sqlalchemy import func
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import (
    Action,
    Agent,
    ApiKey,
    Decision,
    Exchange,
    ExchangeStatus,
    Review,
    ReviewEvent,
    ReviewKind,
    ReviewStatus,
)
from gateway.review import urgency

Sort = Literal["urgency", "age", "confidence"]
LIMIT = 200


@dataclass(frozen=True)
class QueueFilter:
    tier: str | None  # None: every tier (with `assigned_to`, an agent's own work)
    sort: Sort = "urgency"  # waiting clients first (`urgency.py`); by age, oldest first; by confidence, least sure
    desc: bool = False  # flips age or confidence
    model: str | None = None
    api_key_id: int | None = None
    assigned_to: int | None = None  # only the reviews assigned to this agent


class QueueRow(NamedTuple):
    review: Review
    exchange: Exchange
    holder: str | None  # who holds a claim on it (the claim may have run out)
    tags: list[str]  # the reason tags of its escalations, if it was escalated
    assignee: str | None = None  # whose work it is, when a team lead (or the agent) assigned it

    def claimed(self, now: datetime) -> bool:
        """Someone holds a claim on it that has not run out."""
        expires = self.review.claim_expires_at
        return self.holder is not None and expires is not None and expires > now

    def client_waiting(self, now: datetime) -> bool:
        """A client is still waiting on this review's decision (until its deadline outcome goes out)."""
        return (
            self.review.kind == ReviewKind.HOLD
            and self.exchange.status == ExchangeStatus.HELD
            and self.exchange.deadline_outcome is None
            and self.review.deadline_at > now
        )


@dataclass(frozen=True)
class QueueView:
    rows: list[QueueRow]
    counts: dict[str, int]  # open reviews per tier
    models: list[str]  # every model name seen, for the filter
    keys: list[tuple[int, str]]  # every API key (id, name), for the filter
    webhooks: frozenset[int] = frozenset()  # the keys with a webhook endpoint: their apps hear of a decision at once


async def view(session: AsyncSession, wanted: QueueFilter, now: datetime) -> QueueView:
    if wanted.sort == "urgency":
        ordering = urgency.most_urgent_first(now)
    else:
        order = col(Review.created_at) if wanted.sort == "age" else col(Exchange.confidence)
        ordering = (order.desc() if wanted.desc else order.asc(), col(Review.created_at).asc())
    assignee = aliased(Agent)
    query = (
        select(Review, Exchange, Agent.username, assignee.username)
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .outerjoin(Agent, col(Agent.id) == col(Review.claimed_by))
        .outerjoin(assignee, col(assignee.id) == col(Review.assigned_to))
        .where(col(Review.status) == ReviewStatus.OPEN)
        .order_by(*ordering)
        .limit(LIMIT)
    )
    if wanted.tier is not None:
        query = query.where(col(Review.tier) == wanted.tier)
    if wanted.assigned_to is not None:
        query = query.where(col(Review.assigned_to) == wanted.assigned_to)
    if wanted.model:
        query = query.where(col(Exchange.model) == wanted.model)
    if wanted.api_key_id is not None:
        query = query.where(col(Review.api_key_id) == wanted.api_key_id)
    open_counts = await counts(session)
    found = (await session.exec(query)).all()
    tags = await _escalation_tags(session, [review.id for review, *_ in found])
    rows = [
        QueueRow(review, exchange, holder, tags.get(review.id, []), assigned)
        for review, exchange, holder, assigned in found
    ]
    models = list((await session.exec(select(Exchange.model).distinct().order_by(Exchange.model))).all())
    found_keys = (await session.exec(select(ApiKey.id, ApiKey.name, ApiKey.webhook_url))).all()
    keys = [(key_id, name) for key_id, name, _ in found_keys if key_id is not None]
    webhooks = frozenset(key_id for key_id, _, url in found_keys if key_id is not None and url)
    return QueueView(rows=rows, counts=open_counts, models=models, keys=sorted(keys), webhooks=webhooks)


async def _escalation_tags(session: AsyncSession, review_ids: list[str]) -> dict[str, list[str]]:
    if not review_ids:
        return {}
    escalations = select(Decision.review_id, Decision.tags).where(
        col(Decision.review_id).in_(review_ids), col(Decision.action) == Action.ESCALATE
    )
    found: dict[str, list[str]] = {}
    for review_id, tags in (await session.exec(escalations.order_by(col(Decision.id)))).all():
        found.setdefault(review_id, [])
        found[review_id] += [tag for tag in tags or [] if tag not in found[review_id]]
    return found


async def counts(session: AsyncSession) -> dict[str, int]:
    """Open reviews per tier."""
    per_tier = select(Review.tier, func.count()).where(col(Review.status) == ReviewStatus.OPEN).group_by(Review.tier)
    return {tier: int(count) for tier, count in (await session.exec(per_tier)).all()}


async def assigned_count(session: AsyncSession, agent_id: int) -> int:
    """Open reviews assigned to an agent, every tier."""
    mine = select(func.count()).select_from(Review).where(col(Review.status) == ReviewStatus.OPEN)
    return int((await session.exec(mine.where(col(Review.assigned_to) == agent_id))).one())


async def version(session: AsyncSession) -> int:
    """The newest review event's id: it moves whenever a review arrives, is claimed, escalated or decided."""
    return (await session.exec(select(func.max(ReviewEvent.id)))).one() or 0
