"""Console pages: login, the queue, a review, and the decision form."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func
from sqlmodel import col, select

from console import auth
from console.auth import CurrentAgent
from console.rendering import render
from gateway import decisions
from gateway.deps import RuntimeDep
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.models import Action, Decision, Exchange, Review

router = APIRouter(prefix="/console", include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # Only paths inside the console: a login link must not bounce agents to another site.
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console/"


@router.get("/login", name="console_login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
async def login(
    request: Request,
    runtime: RuntimeDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/console/",
) -> Response:
    async with runtime.sessions() as session:
        agent = await auth.verify(session, username.strip(), password)
    if agent is None:
        context = {"next": _safe_next(next), "error": "Unknown username or wrong password."}
        return render(request, "login.html", context, status_code=401)
    request.session.clear()
    request.session["agent_id"] = agent.id
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/console/login", status_code=303)


@router.get("/", name="console_queue")
async def queue(request: Request, agent: CurrentAgent, runtime: RuntimeDep, tier: str | None = None) -> Response:
    tiers = [*runtime.policy.tiers, runtime.settings.audit.tier]
    current = tier if tier in tiers else tiers[0]
    async with runtime.sessions() as session:
        counts = dict(
            (
                await session.exec(
                    select(Review.tier, func.count()).where(Review.status == "open").group_by(Review.tier)
                )
            ).all()
        )
        rows = (
            await session.exec(
                select(Review, Exchange)
                .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
                .where(Review.status == "open", Review.tier == current)
                .order_by(col(Review.created_at))
                .limit(200)
            )
        ).all()
    context = {
        "agent": agent,
        "tiers": tiers,
        "tier": current,
        "counts": counts,
        "rows": rows,
        "can_decide": decisions.can_decide(agent.role, current, runtime.policy.tiers, runtime.settings.audit.tier),
    }
    return render(request, "queue.html", context, block="queue_rows")


async def _review_context(runtime: RuntimeDep, review_id: str, agent: CurrentAgent) -> dict[str, object]:
    async with runtime.sessions() as session:
        review = await session.get(Review, review_id)
        if review is None:
            raise NotFound(f"No review with id {review_id!r}.")
        exchange = await session.get(Exchange, review.exchange_id)
        history = (
            await session.exec(
                select(Decision).where(Decision.review_id == review_id).order_by(col(Decision.created_at))
            )
        ).all()
    return {
        "agent": agent,
        "review": review,
        "exchange": exchange,
        "decisions": history,
        "error": None,
        "draft": None,
        "waiting": runtime.holds.waiting(review_id),
        "can_decide": decisions.can_decide(agent.role, review.tier, runtime.policy.tiers, runtime.settings.audit.tier),
    }


@router.get("/reviews/{review_id}", name="console_review")
async def review_page(request: Request, review_id: str, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    return render(request, "review.html", await _review_context(runtime, review_id, agent))


@router.post("/reviews/{review_id}/decide")
async def decide(
    request: Request,
    review_id: str,
    agent: CurrentAgent,
    runtime: RuntimeDep,
    action: Annotated[Action, Form()],
    text: Annotated[str | None, Form()] = None,
    comment: Annotated[str, Form()] = "",
) -> Response:
    try:
        decided = await decisions.decide(
            runtime.sessions,
            runtime.holds,
            review_id=review_id,
            agent=agent,
            action=action,
            tiers=runtime.policy.tiers,
            text=text,
            comment=comment,
        )
    except (Conflict, Forbidden, InvalidRequest) as exc:
        context = await _review_context(runtime, review_id, agent)
        context.update(error=exc.message, draft=text)
        return render(request, "review.html", context, status_code=exc.status_code)
    tier = decided.exchange.tier or runtime.settings.audit.tier
    return RedirectResponse(f"/console/?tier={tier}&decided={review_id}", status_code=303)
