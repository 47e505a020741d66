"""Team work from the queue: assign the selected reviews to an agent, take them, give them back, or approve
them in bulk behind a confirmation that lists what will be released. Everything goes through the review desk
and lands in each review's audit trail."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import StringConstraints

from console.auth import CurrentAgent
from console.rendering import render
from console.routes import console_path
from gateway.deps import DeskDep
from gateway.errors import InvalidRequest

router = APIRouter(prefix="/console/bulk", include_in_schema=False)
ReviewIds = Annotated[list[Annotated[str, StringConstraints(max_length=64)]] | None, Form()]


def _with(target: str, notice: str) -> str:
    return f"{target}{'&' if '?' in target else '?'}{notice}"


@router.post("")
async def bulk(
    request: Request,
    agent: CurrentAgent,
    desk: DeskDep,
    do: Annotated[Literal["assign", "take", "unassign", "approve"], Form()],
    review_id: ReviewIds = None,
    to: Annotated[str, Form(max_length=200)] = "",
    back: Annotated[str, Form(max_length=2000)] = "/console/",
) -> Response:
    """The queue's bulk bar. `approve` shows the confirmation first; the rest take effect at once."""
    chosen = review_id or []
    if not chosen:
        raise InvalidRequest("Select at least one review first.", param="review_id")
    if do == "approve":
        records = [await desk.record(found) for found in dict.fromkeys(chosen)]
        rows = [(found, desk.bulk_problem(found, agent)) for found in records]
        return render(request, "bulk_approve.html", {"agent": agent, "rows": rows, "back": console_path(back)})
    target = {"assign": to or None, "take": agent.username, "unassign": None}[do]
    if do == "assign" and not target:
        raise InvalidRequest("Choose whom to assign them to.", param="to")
    done = await desk.assign(chosen, target, agent)
    return RedirectResponse(_with(console_path(back), f"assigned={len(done)}"), status_code=303)


@router.post("/approve")
async def approve(
    agent: CurrentAgent,
    desk: DeskDep,
    review_id: ReviewIds = None,
    back: Annotated[str, Form(max_length=2000)] = "/console/",
) -> Response:
    """Approve the confirmed reviews, each its own decision (each waiting client is answered)."""
    done = await desk.approve_many(review_id or [], agent)
    said = f"approved={len(done.decided)}" + (f"&left_out={len(done.left_out)}" if done.left_out else "")
    return RedirectResponse(_with(console_path(back), said), status_code=303)
