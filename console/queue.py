"""The queue: a tab per tier with counts, sorting and filters, live updates over server-sent events,
and "next", which claims the oldest review nobody holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func
from sqlmodel import col, select
from sse_starlette import EventSourceResponse, ServerSentEvent

from console.auth import CurrentAgent
from console.rendering import render
from gateway.deps import RuntimeDep
from gateway.models import Agent, ApiKey, Exchange, Review, ReviewEvent, utcnow
from gateway.review import claims, decisions
from gateway.runtime import Runtime

router = APIRouter(prefix="/console", include_in_schema=False)
Sort = Literal["age", "confidence"]


def queue_tiers(runtime: Runtime) -> list[str]:
    return [*runtime.policy.tiers, runtime.settings.audit.tier]


def may_decide(runtime: Runtime, agent: Agent, tier: str) -> bool:
    return decisions.can_decide(agent.role, tier, runtime.policy.tiers, runtime.settings.audit.tier)


@router.get("/", name="console_queue")
async def queue(
    request: Request,
    agent: CurrentAgent,
    runtime: RuntimeDep,
    tier: str | None = None,
    sort: Sort = "age",
    desc: bool = False,
    model: Annotated[str | None, Query(max_length=200)] = None,
    key: Annotated[str, Query(max_length=20, pattern=r"^\d*$")] = "",  # "" from the "All keys" option
) -> Response:
    tiers = queue_tiers(runtime)
    current = tier if tier in tiers else next((t for t in tiers if may_decide(runtime, agent, t)), tiers[0])
    # Oldest first by default; by confidence, least sure first. `desc` flips either.
    order = col(Review.created_at) if sort == "age" else col(Exchange.confidence)
    query = (
        select(Review, Exchange, Agent.username)
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .outerjoin(Agent, col(Agent.id) == col(Review.claimed_by))
        .where(col(Review.status) == "open", col(Review.tier) == current)
        .order_by(order.desc() if desc else order.asc(), col(Review.created_at))
        .limit(200)
    )
    if model:
        query = query.where(col(Exchange.model) == model)
    key_id = int(key) if key else None
    if key_id is not None:
        query = query.where(col(Review.api_key_id) == key_id)
    async with runtime.sessions() as session:
        counts = dict(
            (
                await session.exec(
                    select(Review.tier, func.count()).where(col(Review.status) == "open").group_by(Review.tier)
                )
            ).all()
        )
        rows = (await session.exec(query)).all()
        models = (await session.exec(select(Exchange.model).distinct().order_by(Exchange.model))).all()
        keys = (await session.exec(select(ApiKey.id, ApiKey.name).order_by(ApiKey.id))).all()
    context = {
        "agent": agent,
        "tiers": tiers,
        "tier": current,
        "counts": counts,
        "rows": rows,
        "now": utcnow(),
        "sort": sort,
        "desc": desc,
        "model": model or "",
        "key": key_id,
        "models": models,
        "keys": keys,
        "can_decide": may_decide(runtime, agent, current),
        "query": request.url.query,
    }
    return render(request, "queue.html", context, block="queue_panel")


@router.post("/next")
async def take_next(agent: CurrentAgent, runtime: RuntimeDep, tier: Annotated[str, Form(max_length=100)]) -> Response:
    if tier not in queue_tiers(runtime) or not may_decide(runtime, agent, tier):
        return RedirectResponse(f"/console/?tier={tier}&empty=1", status_code=303)
    review = await claims.next_review(runtime.sessions, agent, tier, runtime.settings.claim_lease)
    if review is None:
        return RedirectResponse(f"/console/?tier={tier}&empty=1", status_code=303)
    return RedirectResponse(f"/console/reviews/{review.id}", status_code=303)


async def _latest_event(runtime: Runtime) -> int:
    async with runtime.sessions() as session:
        return (await session.exec(select(func.max(ReviewEvent.id)))).one() or 0


async def queue_changes(
    runtime: Runtime, disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[ServerSentEvent]:
    """A `queue` event whenever a review arrives, is claimed, escalated or decided, on any replica.

    Every such change writes a review event, so the newest event id is the queue's version; it is
    checked every `HITL_HOLD__POLL_INTERVAL` seconds.
    """
    seen = await _latest_event(runtime)
    while not await disconnected():
        await asyncio.sleep(runtime.settings.hold.poll_interval)
        latest = await _latest_event(runtime)
        if latest != seen:
            seen = latest
            yield ServerSentEvent(event="queue", data=str(latest))


@router.get("/events")
async def events(request: Request, agent: CurrentAgent, runtime: RuntimeDep) -> EventSourceResponse:
    return EventSourceResponse(queue_changes(runtime, request.is_disconnected), ping=15)
