"""History: decided reviews, searchable by date, agent, decision, tier and text."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import or_
from sqlmodel import col, select

from console.auth import CurrentAgent
from console.queue import queue_tiers
from console.rendering import render
from gateway.deps import RuntimeDep
from gateway.errors import InvalidRequest
from gateway.models import Action, Agent, Decision, Exchange, Review

router = APIRouter(prefix="/console", include_in_schema=False)
T = TypeVar("T")


def _parsed(parse: Callable[[str], T], value: str, name: str) -> T | None:
    if not value:
        return None
    try:
        return parse(value)
    except ValueError:
        raise InvalidRequest(f"{value!r} is not a valid {name}.", param=name) from None


@router.get("/history", name="console_history")
async def history(
    request: Request,
    agent: CurrentAgent,
    runtime: RuntimeDep,
    q: Annotated[str, Query(max_length=200)] = "",
    by: Annotated[str, Query(max_length=200)] = "",
    action: Annotated[str, Query(max_length=20)] = "",
    tier: Annotated[str, Query(max_length=100)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    # The search form sends every field, empty ones as "": an empty field is no filter.
    wanted = _parsed(Action, action, "action")
    start, end = _parsed(date.fromisoformat, since, "since"), _parsed(date.fromisoformat, until, "until")
    query = (
        select(Decision, Review, Exchange, Agent.username)
        .join(Review, col(Review.id) == col(Decision.review_id))
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .join(Agent, col(Agent.id) == col(Decision.agent_id))
        .order_by(col(Decision.created_at).desc(), col(Decision.id).desc())
        .limit(200)
    )
    if q.strip():
        needle = f"%{q.strip()}%"
        query = query.where(
            or_(
                col(Exchange.candidate_text).ilike(needle),
                col(Exchange.final_text).ilike(needle),
                col(Decision.text).ilike(needle),
                col(Decision.comment).ilike(needle),
                col(Review.id).ilike(needle),
            )
        )
    if by:
        query = query.where(col(Agent.username) == by)
    if wanted is not None:
        query = query.where(col(Decision.action) == wanted)
    if tier:
        query = query.where(col(Decision.from_tier) == tier)
    if start is not None:
        query = query.where(col(Decision.created_at) >= datetime.combine(start, time.min, UTC))
    if end is not None:
        query = query.where(col(Decision.created_at) < datetime.combine(end + timedelta(days=1), time.min, UTC))
    async with runtime.sessions() as session:
        rows = (await session.exec(query)).all()
        agents = (await session.exec(select(Agent.username).order_by(Agent.username))).all()
    context = {
        "agent": agent,
        "rows": rows,
        "agents": agents,
        "actions": list(Action),
        "tiers": queue_tiers(runtime),
        "filters": {"q": q, "by": by, "action": action, "tier": tier, "since": since, "until": until},
    }
    return render(request, "history.html", context, block="history_rows")
