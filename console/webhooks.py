"""Webhooks (admins): the outbox's counts, the deliveries that failed for good, and a button to send one again."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from console.auth import CurrentAgent, admin_only
from console.rendering import render
from gateway.deps import OutboxDep

router = APIRouter(prefix="/console/webhooks", include_in_schema=False)


@router.get("", name="console_webhooks")
async def webhooks(request: Request, agent: CurrentAgent, outbox: OutboxDep) -> Response:
    context = {
        "agent": admin_only(agent, "see webhook deliveries"),
        "counts": await outbox.counts(),
        "failed": await outbox.failed(),
    }
    return render(request, "webhooks.html", context, block="deliveries")


@router.post("/{delivery_id}/retry")
async def retry(delivery_id: int, agent: CurrentAgent, outbox: OutboxDep) -> Response:
    admin_only(agent, "see webhook deliveries")
    await outbox.retry(delivery_id)
    return RedirectResponse("/console/webhooks?retried=1", status_code=303)
