"""History: decided reviews, searchable by date, agent, decision, tier and text."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from console.auth import CurrentAgent
from console.rendering import render
from gateway.deps import DeskDep
from gateway.errors import InvalidRequest
from gateway.models import Action
from gateway.review.history import HistoryFilter

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
    desk: DeskDep,
    q: Annotated[str, Query(max_length=200)] = "",
    by: Annotated[str, Query(max_length=200)] = "",
    action: Annotated[str, Query(max_length=20)] = "",
    tier: Annotated[str, Query(max_length=100)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    # The search form sends every field, empty ones as "": an empty field is no filter.
    wanted = HistoryFilter(
        text=q,
        agent=by,
        action=_parsed(Action, action, "action"),
        tier=tier,
        since=_parsed(date.fromisoformat, since, "since"),
        until=_parsed(date.fromisoformat, until, "until"),
    )
    context = {
        "agent": agent,
        "rows": await desk.history(wanted),
        "agents": await desk.agent_names(),
        "actions": list(Action),
        "tiers": desk.tiers.queues,
        "filters": {"q": q, "by": by, "action": action, "tier": tier, "since": since, "until": until},
    }
    return render(request, "history.html", context, block="history_rows")
