"""Datasets (admins): how many rows each format would hold under the filters in the address, what would be
dropped and why, and a download of any of them. The same parameters as the admin API (`gateway.datasets.params`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from console.auth import CurrentAgent, admin_only
from console.rendering import render
from gateway.datasets import export, formats, manifest, params, records
from gateway.datasets.filters import CLOSING
from gateway.deps import RuntimeDep
from gateway.review.decisions import REASON_TAGS

router = APIRouter(prefix="/console/exports", include_in_schema=False)


@router.get("", name="console_exports")
async def exports(request: Request, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    admin_only(agent, "export datasets")
    plan, _ = params.plan(request.query_params)
    tallies = await export.counts(runtime.engine, plan)
    query = request.url.query
    context = {
        "agent": agent,
        "formats": formats.FORMATS,
        "tallies": tallies,
        "query": query,
        "asked": request.query_params,
        "tags": REASON_TAGS,
        "actions": [str(action) for action in CLOSING],
        "split": plan.split.test_size > 0,
    }
    return render(request, "exports.html", context, block="counts")


@router.get("/download/{format_name}", name="console_export_download")
async def download(format_name: str, request: Request, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    admin_only(agent, "export datasets")
    plan, side = params.plan(request.query_params, format_name)
    upto = await records.snapshot(runtime.engine)
    rows = manifest.lines(runtime.engine, export.Exporter(plan), upto, side)
    name = f"{plan.format.name}{'.' + side if side else ''}.jsonl"
    headers = {"content-disposition": f'attachment; filename="{name}"', "x-hitl-export-cursor": str(upto)}
    return StreamingResponse(rows, media_type="application/x-ndjson", headers=headers)
