"""A review's record: the review, its exchange, its decisions and audit trail, and who is who."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import NotFound
from gateway.models import Agent, ApiKey, Decision, Exchange, Review, ReviewEvent
from gateway.review.tool_edits import CallForm, forms


@dataclass(frozen=True)
class ReviewRecord:
    review: Review
    exchange: Exchange
    decisions: list[Decision]
    trail: list[ReviewEvent]
    names: dict[int, str]  # agent id -> username, for the trail and the claim
    webhook: bool = False  # the client's API key has a webhook endpoint: the decision is sent there too

    def tool_calls(self) -> list[CallForm]:
        """The candidate's tool calls as the editor shows them (none for a text answer)."""
        return forms(self.exchange.request, self.exchange.response)

    def holder_name(self) -> str | None:
        return self.names.get(self.review.claimed_by) if self.review.claimed_by is not None else None


async def load(session: AsyncSession, review_id: str) -> ReviewRecord:
    review = await session.get(Review, review_id)
    if review is None:
        raise NotFound(f"No review with id {review_id!r}.")
    exchange = await session.get(Exchange, review.exchange_id)
    assert exchange is not None
    names = {
        agent_id: name for agent_id, name in (await session.exec(select(Agent.id, Agent.username))).all() if agent_id
    }
    by_review = col(ReviewEvent.review_id) == review_id
    trail = list((await session.exec(select(ReviewEvent).where(by_review).order_by(col(ReviewEvent.id)))).all())
    decided = col(Decision.review_id) == review_id
    decisions = list((await session.exec(select(Decision).where(decided).order_by(col(Decision.id)))).all())
    key = await session.get(ApiKey, exchange.api_key_id)
    webhook = key is not None and bool(key.webhook_url)
    return ReviewRecord(
        review=review, exchange=exchange, decisions=decisions, trail=trail, names=names, webhook=webhook
    )
