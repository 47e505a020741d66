"""The admin API for a team's own dashboards: the period's figures as JSON, or as a CSV of (figure, value), for an
API key made with `--role insights`.

    GET /admin/insights/summary?since=2026-12-01&until=2026-12-08&tier=agent&model=support-bot&api_key=3
    GET /admin/insights/summary?format=csv
    GET /admin/insights/loop?since=...&format=csv   (the loop's health, week by week)
    GET /admin/insights/reviewers?since=...&tier=agent   (reviewer quality, per agent, with flags)
    GET /admin/insights/drift?since=...&model=support-bot&format=csv   (calibration drift, per confidence band)
    GET /admin/insights/threshold?release=0.85&since=...&model=support-bot   (a threshold simulation)
    Authorization: Bearer <insights key>
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.deps import EngineDep, KeysDep, RuntimeDep
from gateway.errors import InvalidRequest
from gateway.insights import reviewers, scope, summary
from gateway.learning import drift, health, simulation
from gateway.models import KeyRole, Route
from gateway.runtime import Runtime

router = APIRouter(prefix="/admin")
FORMATS = ("json", "csv")


@router.get("/insights/summary", name="insights_summary")
async def insights_summary(request: Request, keys: KeysDep, engine: EngineDep, runtime: RuntimeDep) -> Response:
    await keys.authenticate(request.headers.get("authorization"), KeyRole.INSIGHTS)
    params = dict(request.query_params)
    shape = _shape(params)
    now = runtime.clock.now()
    found = await summary.summary(engine, scope.parse(params, now), now)
    if shape == "json":
        return JSONResponse(found)
    return _csv("insights-summary.csv", ("figure", "value"), summary.rows(found))


@router.get("/insights/loop", name="insights_loop")
async def insights_loop(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    """The loop's health week by week: review rate, the escaped-error estimate from the audits with its 95%
    interval, and the policy versions and calibrators that were live."""
    await keys.authenticate(request.headers.get("authorization"), KeyRole.INSIGHTS)
    params = dict(request.query_params)
    shape = _shape(params)
    chosen = scope.parse(params, runtime.clock.now())
    async with runtime.sessions() as session:
        weeks = await health.weekly(session, chosen.conditions())
    if shape == "json":
        return JSONResponse({"scope": chosen.described(), "weeks": weeks})
    columns = tuple(weeks[0]) if weeks else ("week",)
    rows = ([" ".join(value) if isinstance(value, list) else value for value in week.values()] for week in weeks)
    return _csv("insights-loop.csv", columns, rows)


@router.get("/insights/reviewers", name="insights_reviewers")
async def insights_reviewers(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    """Each agent's pace and rates beside the team's on the same work, and flags with their evidence."""
    await keys.authenticate(request.headers.get("authorization"), KeyRole.INSIGHTS)
    params = dict(request.query_params)
    shape = _shape(params)
    chosen = scope.parse(params, runtime.clock.now())
    async with runtime.sessions() as session:
        agents = await reviewers.reviewers(session, chosen)
    if shape == "json":
        return JSONResponse({"scope": chosen.described(), "agents": agents})
    columns = (*(name for name in reviewers.COLUMNS), "flags")
    rows = ([*(agent[name] for name in reviewers.COLUMNS), "; ".join(f["evidence"] for f in agent["flags"])]
            for agent in agents)  # fmt: skip
    return _csv("insights-reviewers.csv", columns, rows)


@router.get("/insights/drift", name="insights_drift")
async def insights_drift(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    """Per confidence band, what the period's labels say against what the confidence promises, and the period's
    histogram against the previous period's; warnings in plain words when they part."""
    await keys.authenticate(request.headers.get("authorization"), KeyRole.INSIGHTS)
    params = dict(request.query_params)
    shape = _shape(params)
    chosen = _model_scope(params, runtime)
    async with runtime.sessions() as session:
        found = await drift.of_period(session, chosen.since, chosen.until, chosen.model, chosen.tier)
    if shape == "json":
        return JSONResponse({"scope": chosen.described(), **found})
    bands = found["bands"]
    return _csv("insights-drift.csv", tuple(bands[0]), ([*band.values()] for band in bands))


def _model_scope(params: dict[str, str], runtime: Runtime) -> scope.Scope:
    """A scope of the policy's own (a period, a model, a tier): thresholds and confidences are the policy's and
    the model's, for every API key."""
    chosen = scope.parse(params, runtime.clock.now())
    if chosen.api_key is not None:
        raise InvalidRequest("Thresholds and confidences are the same for every API key: leave out api_key.",
                             param="api_key")  # fmt: skip
    return chosen


def _shape(params: dict[str, str]) -> str:
    shape = params.pop("format", "json")
    if shape not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}.", param="format")
    return shape


def _csv(name: str, header: tuple[str, ...], rows: Iterable[Sequence[Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    headers = {"content-disposition": f'attachment; filename="{name}"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/insights/threshold", name="insights_threshold")
async def insights_threshold(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    """What the period would have cost with the release band starting at `release`, beside the policy's own
    (its pooled bands): review rate, agent hours, and the escaped errors the labels imply."""
    await keys.authenticate(request.headers.get("authorization"), KeyRole.INSIGHTS)
    params = dict(request.query_params)
    asked = params.pop("release", None)
    try:
        release = float(asked) if asked is not None else None
    except ValueError:
        release = None
    if release is None or not 0.0 <= release <= 1.0:
        raise InvalidRequest("release must be a number between 0 and 1: where the release band would start.",
                             param="release")  # fmt: skip
    chosen = _model_scope(params, runtime)
    async with runtime.sessions() as session:
        history = await simulation.load(session, chosen.since, chosen.until, chosen.model, chosen.tier)
    bands = runtime.policy.bands_for(chosen.model)
    current = next((band.min for band in bands if band.route == Route.RELEASE), None)  # None: it releases nothing
    return JSONResponse({
        "scope": chosen.described(),
        "seconds_per_decision": history.seconds_per_decision,
        "decisions_timed": history.decisions_timed,
        "current": simulation.simulate(history, current).described() if current is not None else None,
        "proposed": simulation.simulate(history, release).described(),
    })  # fmt: skip
