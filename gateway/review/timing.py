"""How long agents take over a decision: from an agent's last claim of a review to that agent's decision on it
(the time in the queue before anyone claimed it is the customer's wait, not the agent's work)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Decision, EventKind, Exchange, Review, ReviewEvent


async def timed(
    session: AsyncSession,
    within: list[Any],
    decided: Sequence[Sequence[Any]] | None = None,
    since: datetime | None = None,
) -> dict[int, float]:
    """The seconds each decision took (by decision id), of the reviews of the exchanges `within` takes; a decision
    with no claim by its agent before it (a bulk approval from the queue) is not timed. `decided`: those decisions
    as rows that begin (id, review id, agent id, time), when the caller has read them already. `since`: when the
    earliest of those exchanges arrived (no claim is older), so the claims are read as a range of their index."""
    claims = (
        select(ReviewEvent.review_id, ReviewEvent.agent_id, ReviewEvent.at)
        .join(Review, col(Review.id) == col(ReviewEvent.review_id))
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .where(col(ReviewEvent.kind) == EventKind.CLAIMED, *within)
        .where(*([col(ReviewEvent.at) >= since] if since is not None else []))
        .order_by(col(ReviewEvent.at))
    )
    claimed: dict[tuple[str, int | None], list[datetime]] = {}
    for review_id, agent_id, at in (await session.exec(claims)).all():
        claimed.setdefault((review_id, agent_id), []).append(at)
    if decided is None:
        decisions = (
            select(Decision.id, Decision.review_id, Decision.agent_id, Decision.created_at)
            .join(Review, col(Review.id) == col(Decision.review_id))
            .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
            .where(*within)
        )
        decided = (await session.exec(decisions)).all()
    spent: dict[int, float] = {}
    for decision_id, review_id, agent_id, at, *_ in decided:
        before = [when for when in claimed.get((review_id, agent_id), []) if when <= at]
        if before and decision_id is not None:
            spent[decision_id] = (at - before[-1]).total_seconds()
    return spent


async def time_per_decision(session: AsyncSession, within: list[Any]) -> tuple[float | None, int]:
    """The median seconds a decision took, and how many decisions were timed."""
    spent = list((await timed(session, within)).values())
    return (statistics.median(spent) if spent else None), len(spent)
