"""The admin API for data pipelines: an export streamed as JSONL, for an API key made with `--role export`.

    GET /admin/exports/{format}?since=...&tag=...&test_size=0.1&split=train
    Authorization: Bearer <export key>

The response streams (`application/x-ndjson`); `x-hitl-export-cursor` says the cursor to continue from with
`after_cursor`, known before the first row because the export reads up to a snapshot taken when it starts.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from gateway.datasets import manifest, params, records
from gateway.datasets.export import Exporter
from gateway.deps import EngineDep, KeysDep
from gateway.models import KeyRole

router = APIRouter(prefix="/admin")
CURSOR = "x-hitl-export-cursor"


@router.get("/exports/{format_name}", name="export_dataset")
async def export_dataset(format_name: str, request: Request, keys: KeysDep, engine: EngineDep) -> StreamingResponse:
    await keys.authenticate(request.headers.get("authorization"), KeyRole.EXPORT)
    plan, side = params.plan(request.query_params, format_name)
    upto = await records.snapshot(engine)
    rows = manifest.lines(engine, Exporter(plan), upto, side)
    headers = {CURSOR: str(upto), "content-disposition": f'attachment; filename="{plan.format.name}.jsonl"'}
    return StreamingResponse(rows, media_type="application/x-ndjson", headers=headers)
