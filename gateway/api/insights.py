"""The admin API for a team's own dashboards: the period's figures as JSON, or as a CSV of (figure, value), for an
API key made with `--role insights`.

    GET /admin/insights/summary?since=2026-12-01&until=2026-12-08&tier=agent&model=support-bot&api_key=3
    GET /admin/insights/summary?format=csv
    Authorization: Bearer <insights key>
"""

from __future__ import annotations

import csv
import io

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.deps import EngineDep, KeysDep, RuntimeDep
from gateway.errors import InvalidRequest
from gateway.insights import scope, summary
from gateway.models import KeyRole

router = APIRouter(prefix="/admin")
FORMATS = ("json", "csv")


@router.get("/insights/summary", name="insights_summary")
async def insights_summary(request: Request, keys: KeysDep, engine: EngineDep, runtime: RuntimeDep) -> Response:
    await keys.authenticate(request.headers.get("authorization"), KeyRole.INSIGHTS)
    params = dict(request.query_params)
    shape = params.pop("format", "json")
    if shape not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}.", param="format")
    now = runtime.clock.now()
    found = await summary.summary(engine, scope.parse(params, now), now)
    if shape == "json":
        return JSONResponse(found)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(("figure", "value"))
    writer.writerows(summary.rows(found))
    headers = {"content-disposition": 'attachment; filename="insights-summary.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
