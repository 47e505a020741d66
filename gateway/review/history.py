"""History: decisions, newest first, searchable by text, agent, action, tier and date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple

from sqlalchemy import String, cast, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Action, Agent, Decision, Exchange, Review

LIMIT = 200


@dataclass(frozen=True)
class HistoryFilter:
    text: str = ""  # in the question, the candidate, the final text, the decision's text or comment, or the review id
    agent: str = ""  # username
    action: Action | None = None
    tier: str = ""  # the tier the decision was made in
    since: date | None = None
    until: date | None = None  # inclusive


class HistoryRow(NamedTuple):
    decision: Decision
    review: Review
    exchange: Exchange
    agent: str


async def search(session: AsyncSession, wanted: HistoryFilter) -> list[HistoryRow]:
    query = (
        select(Decision, Review, Exchange, Agent.username)
        .join(Review, col(Review.id) == col(Decision.review_id))
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .join(Agent, col(Agent.id) == col(Decision.agent_id))
        .order_by(col(Decision.created_at).desc(), col(Decision.id).desc())
        .limit(LIMIT)
    )
    if wanted.text.strip():
        needle = f"%{wanted.text.strip()}%"
        query = query.where(
            or_(
                cast(col(Exchange.request), String).ilike(needle),  # the question, as the request holds it
                col(Exchange.candidate_text).ilike(needle),
                col(Exchange.final_text).ilike(needle),
                col(Decision.text).ilike(needle),
                col(Decision.comment).ilike(needle),
                col(Review.id).ilike(needle),
            )
        )
    if wanted.agent:
        query = query.where(col(Agent.username) == wanted.agent)
    if wanted.action is not None:
        query = query.where(col(Decision.action) == wanted.action)
    if wanted.tier:
        query = query.where(col(Decision.from_tier) == wanted.tier)
    if wanted.since is not None:
        query = query.where(col(Decision.created_at) >= datetime.combine(wanted.since, time.min, UTC))
    if wanted.until is not None:
        end = datetime.combine(wanted.until + timedelta(days=1), time.min, UTC)
        query = query.where(col(Decision.created_at) < end)
    return [HistoryRow(*row) for row in (await session.exec(query)).all()]


async def agent_names(session: AsyncSession) -> list[str]:
    return list((await session.exec(select(Agent.username).order_by(Agent.username))).all())
