"""The admin API for a team's own dashboards: the period's figures as JSON, or as a CSV of (figure, value), for an
API key made with `--role insights`.

    GET /admin/insights/summary?since=2026-12-01&until=2026-12-08&tier=agent&model=support-bot&api_key=3
    GET /admin/insights/summary?reason=rule:refunds   (or a kind: confidence, rule, tool_calls, unscored, ...)
    GET /admin/insights/summary?format=csv
    GET /admin/insights/series?since=...&format=csv   (hour by hour or day by day: volume, latency, backlog)
    GET /admin/insights/loop?since=...&format=csv   (the loop's health, week by week)
    GET /admin/insights/reviewers?since=...&tier=agent   (reviewer quality, per agent, with flags)
    GET /admin/insights/agreement?since=...   (gold items per agent; second reviews' kappa per pair and tier)
    GET /admin/insights/drift?since=...&model=support-bot&format=csv   (calibration drift, per confidence band)
    GET /admin/insights/threshold?release=0.85&since=...&model=support-bot   (a threshold simulation)
    GET /admin/insights/threshold?release=0.85&format=yaml   (the policy file with that band, a new version)
    Authorization: Bearer <insights key>
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.deps import KeysDep, RuntimeDep
from gateway.errors import InvalidRequest
from gateway.insights import agreement, reviewers, scope, series, summary
from gateway.learning import drift, health, simulation
from gateway.models import KeyRole
from gateway.policy import PolicyError
from gateway.relay.apikeys import KeyCache
from gateway.runtime import Runtime

router = APIRouter(prefix="/admin")
FORMATS = ("json", "csv")


@router.get("/insights/summary", name="insights_summary")
async def insights_summary(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    params, shape = await _asked(request, keys)
    now = runtime.clock.now()
    found = await summary.summary(runtime.reads, scope.parse(params, now), now)
    return _shaped(shape, found, "insights-summary.csv", ("figure", "value"), summary.rows(found))


@router.get("/insights/series", name="insights_series")
async def insights_series(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    """The period hour by hour (two days or less) or day by day: volume, held, failed, the upstream's mean latency
    and the backlog at each bucket's end."""
    params, shape = await _asked(request, keys)
    now = runtime.clock.now()
    found = await series.series(runtime.reads, scope.parse(params, now), now)
    return _shaped(shape, found, "insights-series.csv", series.COLUMNS, series.rows(found))


async def _asked(request: Request, keys: KeyCache) -> tuple[dict[str, str], str]:
    """The query's parameters and the answer's format, once the key may read insights."""
    await keys.authenticate(request.headers.get("authorization"), KeyRole.INSIGHTS)
    params = dict(request.query_params)
    return params, _shape(params)


def _shaped(shape: str, found: dict[str, Any], name: str, header: tuple[str, ...], rows: Iterable[Any]) -> Response:
    return JSONResponse(found) if shape == "json" else _csv(name, header, rows)


@router.get("/insights/loop", name="insights_loop")
async def insights_loop(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    """The loop's health week by week: review rate, the escaped-error estimate from the audits with its 95%
    interval, and the policy versions and calibrators that were live."""
    params, shape = await _asked(request, keys)
    chosen = scope.parse(params, runtime.clock.now())
    async with runtime.read_sessions() as session:
        weeks = await health.weekly(session, chosen.conditions(), (chosen.reviewed(),))
    if shape == "json":
        return JSONResponse({"scope": chosen.described(), "weeks": weeks})
    columns = tuple(weeks[0]) if weeks else ("week",)
    rows = ([" ".join(value) if isinstance(value, list) else value for value in week.values()] for week in weeks)
    return _csv("insights-loop.csv", columns, rows)


@router.get("/insights/reviewers", name="insights_reviewers")
async def insights_reviewers(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    """Each agent's pace and rates beside the team's on the same work, and flags with their evidence."""
    params, shape = await _asked(request, keys)
    chosen = scope.parse(params, runtime.clock.now())
    async with runtime.read_sessions() as session:
        agents = await reviewers.reviewers(session, chosen)
    if shape == "json":
        return JSONResponse({"scope": chosen.described(), "agents": agents})
    columns = (*(name for name in reviewers.COLUMNS), "flags")
    rows = ([*(agent[name] for name in reviewers.COLUMNS), "; ".join(f["evidence"] for f in agent["flags"])]
            for agent in agents)  # fmt: skip
    return _csv("insights-reviewers.csv", columns, rows)


@router.get("/insights/agreement", name="insights_agreement")
async def insights_agreement(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    """Gold items per agent (matched, changed answers approved) and second reviews' agreement (Cohen's kappa)
    per pair of agents and per tier; as CSV, one row per agent, pair or tier, its `group` saying which."""
    params, shape = await _asked(request, keys)
    chosen = scope.parse(params, runtime.clock.now())
    async with runtime.read_sessions() as session:
        found = await agreement.agreement(session, chosen)
    if shape == "json":
        return JSONResponse(found)
    columns = ("group", "name", "count", "matched_or_agreement", "kappa", "approved_wrong")
    rows = [*(["gold", row["agent"], row["gold"], row["accuracy"], "", row["approved_wrong"]] for row in found["gold"]),
            *(["pair", row["agents"], row["reviewed_twice"], row["agreement"], _blank(row["kappa"]), ""]
              for row in found["pairs"]),
            *(["tier", row["tier"], row["reviewed_twice"], row["agreement"], _blank(row["kappa"]), ""]
              for row in found["tiers"])]  # fmt: skip
    return _csv("insights-agreement.csv", columns, rows)


def _blank(value: Any) -> Any:
    return "" if value is None else value


@router.get("/insights/drift", name="insights_drift")
async def insights_drift(request: Request, keys: KeysDep, runtime: RuntimeDep) -> Response:
    """Per confidence band, what the period's labels say against what the confidence promises, and the period's
    histogram against the previous period's; warnings in plain words when they part."""
    params, shape = await _asked(request, keys)
    chosen = _model_scope(params, runtime)
    async with runtime.read_sessions() as session:
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
    if chosen.reason is not None:
        raise InvalidRequest("Thresholds and confidences count every scored answer, whatever routed it: leave out "
                             "reason.", param="reason")  # fmt: skip
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
    (its pooled bands, or the model's own): review rate, agent hours, and the escaped errors the labels imply. As
    JSON, a CSV of (figure, current, proposed), or `format=yaml`: the policy file with the band moved, as
    `hitl simulate --write-policy` writes it, to deploy as a new policy version."""
    await keys.authenticate(request.headers.get("authorization"), KeyRole.INSIGHTS)
    params = dict(request.query_params)
    shape = params.pop("format", "json")
    if shape not in (*FORMATS, "yaml"):
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}, yaml.", param="format")
    release = threshold(params.pop("release", None))
    chosen = _model_scope(params, runtime)
    async with runtime.read_sessions() as session:
        history = await simulation.load(session, chosen.since, chosen.until, chosen.model, chosen.tier)
    if shape == "yaml":
        text = written(runtime, history, chosen, release, "the admin API's threshold simulator")
        headers = {"content-disposition": f'attachment; filename="policy-release-{release:g}.yaml"'}
        return Response(text, media_type="application/yaml; charset=utf-8", headers=headers)
    found = simulation.compared(history, runtime.policy, release, chosen.model)
    if shape == "json":
        return JSONResponse({"scope": chosen.described(), **found})
    return _csv("insights-threshold.csv", ("figure", "current", "proposed"), simulation.rows(found))


def threshold(asked: str | None) -> float:
    """The release threshold asked for, a number in [0, 1]; anything else is the caller's error."""
    try:
        release = float(asked) if asked is not None else None
    except ValueError:
        release = None
    if release is None or not 0.0 <= release <= 1.0:
        raise InvalidRequest("release must be a number between 0 and 1: where the release band would start.",
                             param="release")  # fmt: skip
    return release


def written(runtime: Runtime, history: simulation.History, chosen: scope.Scope, release: float, by: str) -> str:
    """The running policy with its release band moved, as a new version's file; a policy that cannot move that way
    (no release band, a model without bands of its own) is the caller's error."""
    period = f"from {chosen.since:%Y-%m-%d %H:%M} to {chosen.until:%Y-%m-%d %H:%M}"
    try:
        return simulation.policy_text(runtime.policy, runtime.settings.policy_path, release, chosen.model, history,
                                      period, by)  # fmt: skip
    except PolicyError as exc:
        raise InvalidRequest(f"The policy cannot be written with that band: {exc}.", param="release") from None
