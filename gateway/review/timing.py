"""How long agents take over a decision: from an agent's last claim of a review to that agent's decision on it
(the time in the queue before anyone claimed it is the customer's wait, not the agent's work)."""

from __future__ import annotations

import statistics
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Decision, EventKind, Exchange, Review, ReviewEvent


async def timed(session: AsyncSession, within: list[Any]) -> dict[int, float]:
    """The seconds each decision took (by decision id), of the reviews of the exchanges `within` takes; a decision
    with no claim by its agent before it (a bulk approval from the queue) is not timed."""
    decisions = (
        select(Decision.id, Decision.created_at, last_claim())
        .join(Review, col(Review.id) == col(Decision.review_id))
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .where(*within)
    )
    return {
        decision_id: (at - claimed).total_seconds()
        for decision_id, at, claimed in (await session.exec(decisions)).all()
        if claimed is not None and decision_id is not None
    }


async def time_per_decision(session: AsyncSession, within: list[Any]) -> tuple[float | None, int]:
    """The median seconds a decision took, and how many decisions were timed."""
    spent = list((await timed(session, within)).values())
    return (statistics.median(spent) if spent else None), len(spent)


def last_claim() -> Any:
    """For a query of decisions: when the deciding agent last claimed the review before deciding it (NULL: never,
    as for a bulk approval from the queue), read by the database per decision off the claims' review index."""
    return (
        select(func.max(ReviewEvent.at))
        .where(
            col(ReviewEvent.review_id) == col(Decision.review_id),
            col(ReviewEvent.agent_id) == col(Decision.agent_id),
            col(ReviewEvent.kind) == EventKind.CLAIMED,
            col(ReviewEvent.at) <= col(Decision.created_at),
        )
        .correlate(Decision)
        .scalar_subquery()
    )
