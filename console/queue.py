"""The queue: a tab per tier with counts, sorting and filters, live updates over server-sent events,
and "next", which claims the oldest review nobody holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from console.auth import CurrentAgent
from console.rendering import render
from gateway.deps import DeskDep, RuntimeDep
from gateway.models import Role
from gateway.review.desk import ReviewDesk
from gateway.review.queue import QueueFilter, Sort

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/", name="console_queue")
async def queue(
    request: Request,
    agent: CurrentAgent,
    desk: DeskDep,
    runtime: RuntimeDep,
    tier: str | None = None,
    sort: Sort = "urgency",
    desc: bool = False,
    model: Annotated[str | None, Query(max_length=200)] = None,
    key: Annotated[str, Query(max_length=20, pattern=r"^\d*$")] = "",  # "" from the "All keys" option
    mine: bool = False,
) -> Response:
    """A tier's open reviews, or with `mine` the ones assigned to this agent in every tier."""
    tiers = desk.tiers.queues
    # Read before the rows: the page's live updates start from here, so a change made while it renders (or
    # before its event stream connects) still reaches it.
    version = await desk.queue_version()
    current = tier if tier in tiers else desk.first_queue(agent, await desk.queue_counts())
    key_id = int(key) if key else None
    wanted = QueueFilter(
        tier=None if mine else current,
        sort=sort,
        desc=desc,
        model=model or None,
        api_key_id=key_id,
        assigned_to=agent.id if mine else None,
    )
    found = await desk.queue(wanted)
    now = runtime.clock.now()
    context = {
        "agent": agent,
        "tiers": tiers,
        "tier": current,
        "counts": found.counts,
        "rows": found.rows,
        "columns": {
            "tags": any(row.tags for row in found.rows),
            "assigned": any(row.assignee for row in found.rows),
            "claimed": any(row.claimed(now) for row in found.rows),
        },
        "now": now,
        "sort": sort,
        "desc": desc,
        "model": model or "",
        "key": key_id,
        "models": found.models,
        "keys": found.keys,
        "webhooks": found.webhooks,
        "can_decide": desk.may_decide(agent, current),
        "query": request.url.query,
        "sla_of": desk.sla,
        "mine": mine,
        "mine_count": await desk.assigned_count(agent),
        "team": await desk.agent_names(),
        "lead": agent.role != Role.AGENT,
        "progress": await desk.progress_today(),
        "version": version,
    }
    return render(request, "queue.html", context, block="queue_panel")


@router.post("/next")
async def take_next(
    agent: CurrentAgent,
    desk: DeskDep,
    tier: Annotated[str, Form(max_length=100)],
    skip: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    """The most urgent review of the tier; from a review page, any but the one the agent skips."""
    review = await desk.next(agent, tier, skip=skip)
    if review is None:
        return RedirectResponse(f"/console/?tier={tier}&empty=1", status_code=303)
    return RedirectResponse(f"/console/reviews/{review.id}", status_code=303)


async def queue_changes(
    desk: ReviewDesk, interval: float, disconnected: Callable[[], Awaitable[bool]], since: int | None = None
) -> AsyncIterator[ServerSentEvent]:
    """A `queue` event whenever a review arrives, is claimed, escalated or decided, on any replica.

    Every such change writes a review event, so the newest event id is the queue's version; it is
    checked every `HITL_HOLD__POLL_INTERVAL` seconds, from `since` (the version the page was rendered at).
    """
    seen = since if since is not None else await desk.queue_version()
    while not await disconnected():
        await asyncio.sleep(interval)
        latest = await desk.queue_version()
        if latest != seen:
            seen = latest
            yield ServerSentEvent(event="queue", data=str(latest))


@router.get("/events")
async def events(
    request: Request, agent: CurrentAgent, desk: DeskDep, runtime: RuntimeDep, since: int | None = None
) -> EventSourceResponse:
    changes = queue_changes(desk, runtime.settings.hold.poll_interval, request.is_disconnected, since)
    return EventSourceResponse(changes, ping=15)
