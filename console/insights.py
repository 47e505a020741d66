"""Insights (seniors and admins): the period's figures of `gateway.insights.summary`, as numbers and small bar
charts drawn on the server, the loop's health week by week (`gateway.learning.health`) and each reviewer's pace,
rates and flags (`gateway.insights.reviewers`), refreshed every half minute; the same scope parameters as the
admin API, which serves the same figures as JSON and CSV."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from console.auth import CurrentAgent
from console.rendering import render
from gateway.deps import RuntimeDep
from gateway.errors import Forbidden
from gateway.insights import reviewers, scope, summary
from gateway.learning import drift, health
from gateway.models import Action, Role

router = APIRouter(prefix="/console/insights", include_in_schema=False)
REFRESH_SECONDS = 30


def _bars(values: dict[str, int | float | None]) -> list[tuple[str, float, float]]:
    """Each (name, value, share of the largest) for a bar chart; a missing value draws as 0."""
    largest = max((value or 0 for value in values.values()), default=0) or 1
    return [(name, value or 0, (value or 0) / largest) for name, value in values.items()]


@router.get("", name="console_insights")
async def insights(request: Request, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    if agent.role not in (Role.SENIOR, Role.ADMIN):
        raise Forbidden("Only seniors and admins read the insights.")
    now = runtime.clock.now()
    asked = {name: request.query_params.get(name) for name in ("since", "until", "tier", "model", "api_key")}
    chosen = scope.parse(asked, now)
    found = await summary.summary(runtime.engine, chosen, now)
    async with runtime.sessions() as session:
        weeks = await health.weekly(session, chosen.conditions())
        agents = await reviewers.reviewers(session, chosen)
        drifted = await drift.of_period(session, chosen.since, chosen.until, chosen.model, chosen.tier)
    context = {
        "agent": agent,
        "found": found,
        "weeks": weeks,
        "agents": agents,
        "drift": drifted,
        "asked": request.query_params,
        "query": request.url.query,
        "tiers": runtime.policy.tiers,
        "refresh": REFRESH_SECONDS,
        "shares": _bars({name: value for name, value in found["shares"].items()}),
        "decisions": _bars({str(action): found["decisions"][str(action)] for action in Action}),
    }
    return render(request, "insights.html", context, block="figures")
