"""`GET /metrics`: the Prometheus text format, unauthenticated like any exporter (keep it on a network only your
Prometheus reaches, or behind the load balancer's rules)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.deps import DeskDep
from gateway.operations.metrics import Metrics

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request, desk: DeskDep) -> Response:
    measured: Metrics = request.app.state.metrics
    body = measured.exposition(await desk.queue_counts())
    return Response(body, media_type=CONTENT_TYPE_LATEST)
