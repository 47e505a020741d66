"""Insights (seniors and admins): the period's figures of `gateway.insights.summary`, as numbers and small bar
charts drawn on the server, the loop's health week by week (`gateway.learning.health`) and each reviewer's pace,
rates and flags (`gateway.insights.reviewers`), refreshed every half minute; the same scope parameters as the
admin API, which serves the same figures as JSON and CSV. The threshold simulator (`gateway.learning.simulation`)
answers in place; an admin takes the policy with the moved band away as a file, a new version to deploy."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from console.auth import CurrentAgent, admin_only
from console.rendering import render, wants_fragment
from gateway.api import insights as insights_api
from gateway.deps import RuntimeDep
from gateway.errors import Forbidden
from gateway.insights import agreement, reviewers, scope, series, summary
from gateway.learning import drift, health, simulation
from gateway.models import Action, Agent, Role
from gateway.policy import Policy
from gateway.runtime import Runtime

router = APIRouter(prefix="/console/insights", include_in_schema=False)
REFRESH_SECONDS = 30
REASON_LABELS = {
    "confidence": "its confidence band",
    "rule": "any rule",
    "tool_calls": "its tool calls",
    "unscored": "no score",
    "progressive": "a progressive stream",
    "reused": "a reused approved answer",
    "upstream_failed": "a failed upstream call",
}


def _bars(values: dict[str, int | float | None]) -> list[tuple[str, float, float]]:
    """Each (name, value, share of the largest) for a bar chart; a missing value draws as 0."""
    largest = max((value or 0 for value in values.values()), default=0) or 1
    return [(name, value or 0, (value or 0) / largest) for name, value in values.items()]


def _lead(agent: Agent) -> None:
    if agent.role not in (Role.SENIOR, Role.ADMIN):
        raise Forbidden("Only seniors and admins read the insights.")


def _rules(policy: Policy) -> list[tuple[str, str]]:
    """Each routing rule of the policy as a reason to narrow to."""
    return [(f"rule:{rule.name}", f"rule {rule.name}") for rule in policy.spec.rules if rule.route is not None]


async def _simulated(request: Request, runtime: Runtime) -> dict[str, Any]:
    """The simulator's answer for the asked `release` on the period's history (of the page's tier and model)."""
    release = insights_api.threshold(request.query_params.get("release"))
    chosen = scope.parse(_asked(request, ("since", "until", "tier", "model")), runtime.clock.now())
    async with runtime.read_sessions() as session:
        history = await simulation.load(session, chosen.since, chosen.until, chosen.model, chosen.tier)
    found = simulation.compared(history, runtime.policy, release, chosen.model)
    kept = {name: value for name, value in _asked(request, ("since", "until", "tier", "model")).items() if value}
    return {"simulated": found, "simulated_release": release, "simulated_query": urlencode(kept | {"release": release})}


def _asked(request: Request, names: tuple[str, ...]) -> dict[str, str | None]:
    return {name: request.query_params.get(name) for name in names}


LINE_WIDTH, LINE_HEIGHT = 300, 48


def _line(values: list[int | float | None], top: float) -> str:
    """SVG polyline points of `values` across the chart, scaled to `top`; a bucket without a value is skipped."""
    step = LINE_WIDTH / max(len(values) - 1, 1)
    scale = LINE_HEIGHT / (top or 1)
    return " ".join(f"{i * step:.1f},{LINE_HEIGHT + 12 - value * scale:.1f}"
                    for i, value in enumerate(values) if value is not None)  # fmt: skip


def _lines(buckets: list[dict[str, Any]], *names: str) -> dict[str, Any]:
    """One small chart of one or two of the series' columns, on one scale, with its largest value to label it."""
    top = max((bucket[name] or 0 for bucket in buckets for name in names), default=0)
    first, last = (buckets[0]["start"], buckets[-1]["start"]) if buckets else ("", "")
    lines = [_line([bucket[name] for bucket in buckets], top) for name in names]
    return {"top": top, "lines": lines, "first": first, "last": last}


@router.get("", name="console_insights")
async def insights(request: Request, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    _lead(agent)
    now = runtime.clock.now()
    fragment = wants_fragment(request)
    chosen = scope.parse(_asked(request, ("since", "until", "tier", "model", "api_key", "reason")), now)
    # Each figure on its own connection, all at once: the page takes as long as its slowest figure where the
    # database serves several (PostgreSQL); one after another where it has one connection (SQLite).
    found, timeline, weeks, agents, agreed, drifted = await asyncio.gather(
        summary.summary(runtime.reads, chosen, now),
        series.series(runtime.reads, chosen, now),
        runtime.reading(lambda session: health.weekly(session, chosen.conditions(), (chosen.reviewed(),))),
        runtime.reading(lambda session: reviewers.reviewers(session, chosen)),
        runtime.reading(lambda session: agreement.agreement(session, chosen)),
        runtime.reading(lambda session: drift.of_period(session, chosen.since, chosen.until, chosen.model,
                                                             chosen.tier)),
    )  # fmt: skip
    buckets = timeline["buckets"]
    context = {
        "agent": agent,
        "found": found,
        "weeks": weeks,
        "agents": agents,
        "agreed": agreed,
        "drift": drifted,
        "asked": request.query_params,
        "query": request.url.query,
        "tiers": runtime.policy.tiers,
        "reasons": [*REASON_LABELS.items(), *_rules(runtime.policy)],
        "refresh": REFRESH_SECONDS,
        "release": simulation.current_release(runtime.policy, chosen.model),
        "shares": _bars({name: value for name, value in found["shares"].items()}),
        "bucket": timeline["bucket"],
        "volume_line": _lines(buckets, "volume", "held"),
        "backlog_line": _lines(buckets, "backlog"),
        "latency_line": _lines(buckets, "latency_ms_mean"),
        # A page asked with `release` (the simulator's form without htmx) shows its simulation; a refresh does not.
        **(await _simulated(request, runtime) if "release" in request.query_params and not fragment else {}),
        "decisions": _bars({str(action): found["decisions"][str(action)] for action in Action}),
        "waits": _bars({"p50": found["time_to_decision_s"]["p50"], "p90": found["time_to_decision_s"]["p90"]}),
        "outcomes": _bars(found["deadline_outcomes"]),
        "failures": _bars(found["upstream"]["failures"]),
    }
    return render(request, "insights.html", context, block="figures")


@router.get("/threshold", name="console_insights_threshold")
async def threshold(request: Request, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    """The simulator's answer, in place on the page: the policy's threshold and the asked one on the period's
    history (of the page's tier and model; thresholds are the same for every API key)."""
    _lead(agent)
    return render(request, "partials/_simulation.html", {"agent": agent, **await _simulated(request, runtime)})


@router.get("/threshold/policy", name="console_insights_policy")
async def threshold_policy(request: Request, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    """The running policy with the simulated band, as a file: a new version, to deploy where `HITL_POLICY_PATH`
    points (as `hitl simulate --write-policy` writes it). Admins only: it is how the routing changes."""
    admin_only(agent, "write a policy")
    release = insights_api.threshold(request.query_params.get("release"))
    chosen = scope.parse(_asked(request, ("since", "until", "tier", "model")), runtime.clock.now())
    async with runtime.read_sessions() as session:
        history = await simulation.load(session, chosen.since, chosen.until, chosen.model, chosen.tier)
    text = insights_api.written(runtime, history, chosen, release, f"the Insights page's simulator ({agent.username})")
    headers = {"content-disposition": f'attachment; filename="policy-release-{release:g}.yaml"'}
    return Response(text, media_type="application/yaml; charset=utf-8", headers=headers)
