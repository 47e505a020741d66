"""What agents decided before on the same question: closing decisions with the same prompt key (the same
messages and tools, word for word once case and spacing are set aside), newest first, with who decided, what
the client was sent and when. The review page shows them beside the answer, one key from being the draft."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.conversation.prompt_keys import prompt_key
from gateway.models import Action, Agent, Decision, Exchange, Review

SHOWN = 5


@dataclass(frozen=True)
class Precedent:
    review_id: str
    agent: str
    action: Action
    sent: str  # what the client was sent (or, for an audit, what the agent would have sent)
    decided_at: datetime


def _sent(decision: Decision, exchange: Exchange) -> str:
    if decision.tool_calls:
        return json.dumps(decision.tool_calls, indent=2, ensure_ascii=False)
    if decision.action == Action.APPROVE or decision.text is None:
        return exchange.candidate_text
    return decision.text


async def earlier(session: AsyncSession, exchange: Exchange, review_id: str) -> list[Precedent]:
    """The newest closing decisions on this exchange's prompt, this review's own left out."""
    query = (
        select(Decision, Exchange, Agent.username)
        .join(Review, col(Review.id) == col(Decision.review_id))
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .join(Agent, col(Agent.id) == col(Decision.agent_id))
        .where(col(Decision.prompt_key) == prompt_key(exchange.request), col(Decision.review_id) != review_id)
        .where(col(Decision.action).in_([Action.APPROVE, Action.EDIT, Action.OVERRIDE]))
        .order_by(col(Decision.created_at).desc(), col(Decision.id).desc())
        .limit(SHOWN)
    )
    return [
        Precedent(decision.review_id, name, decision.action, _sent(decision, found), decision.created_at)
        for decision, found, name in (await session.exec(query)).all()
    ]
