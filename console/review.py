"""A review: the conversation, the candidate as a heat map, every signal and why it was held, the
client's wait, the audit trail; the claim that comes with opening it; and the decision form."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import col, select

from console import heatmap
from console.auth import CurrentAgent
from console.queue import may_decide
from console.rendering import render, render_partial
from gateway.deps import RuntimeDep
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.models import Action, Agent, Decision, Exchange, Review, ReviewEvent, aware, utcnow
from gateway.prompt_templates import canned_responses
from gateway.review import claims, decisions
from gateway.runtime import Runtime

router = APIRouter(prefix="/console/reviews", include_in_schema=False)
_WORDS = re.compile(r"\s+|[^\s]+")


def diff_segments(before: str, after: str) -> list[tuple[str, str]]:
    """A word-level inline diff as (`same` | `del` | `ins`, text) segments; the template escapes the text."""
    old, new = _WORDS.findall(before), _WORDS.findall(after)
    segments: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            segments.append(("same", "".join(old[i1:i2])))
            continue
        if i2 > i1:
            segments.append(("del", "".join(old[i1:i2])))
        if j2 > j1:
            segments.append(("ins", "".join(new[j1:j2])))
    return segments


async def _context(runtime: Runtime, review_id: str, agent: Agent, claim_error: str | None = None) -> dict[str, Any]:
    async with runtime.sessions() as session:
        review = await session.get(Review, review_id)
        if review is None:
            raise NotFound(f"No review with id {review_id!r}.")
        exchange = await session.get(Exchange, review.exchange_id)
        assert exchange is not None
        names = dict((await session.exec(select(Agent.id, Agent.username))).all())
        trail = (
            await session.exec(
                select(ReviewEvent).where(col(ReviewEvent.review_id) == review_id).order_by(col(ReviewEvent.id))
            )
        ).all()
        history = (
            await session.exec(select(Decision).where(col(Decision.review_id) == review_id).order_by(col(Decision.id)))
        ).all()
    now = utcnow()
    deadline = aware(review.deadline_at)
    expires = aware(review.claim_expires_at) if review.claim_expires_at is not None else None
    held_by_me = review.claimed_by == agent.id and expires is not None and expires > now
    held_by_other = review.claimed_by not in (None, agent.id) and expires is not None and expires > now
    canned_version, canned = canned_responses()
    tiers = runtime.policy.tiers
    return {
        "agent": agent,
        "review": review,
        "exchange": exchange,
        "tokens": heatmap.tokens(exchange.response),
        "decisions": history,
        "trail": trail,
        "names": names,
        "error": None,
        "draft": None,
        "waiting": runtime.holds.waiting(review_id),
        "seconds_left": max(0, int((deadline - now).total_seconds())),
        "held_by_me": held_by_me,
        "holder": names.get(review.claimed_by) if held_by_other else None,
        "claim_error": claim_error,
        "lease": runtime.settings.claim_lease,
        "can_decide": may_decide(runtime, agent, review.tier),
        "can_escalate": review.tier in tiers[:-1],
        "reason_tags": decisions.REASON_TAGS,
        "canned": canned,
        "canned_version": canned_version,
        "segments": [],
    }


@router.get("/{review_id}", name="console_review")
async def review_page(request: Request, review_id: str, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    """Opening a review claims it (or renews this agent's claim) when the agent may decide it."""
    claim_error = None
    async with runtime.sessions() as session:
        review = await session.get(Review, review_id)
    if review is not None and review.status == "open" and may_decide(runtime, agent, review.tier):
        try:
            await claims.claim(runtime.sessions, review_id, agent, runtime.settings.claim_lease)
        except Conflict as exc:
            claim_error = exc.message
    return render(request, "review.html", await _context(runtime, review_id, agent, claim_error))


@router.post("/{review_id}/claim")
async def renew_claim(request: Request, review_id: str, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    """Renewed by the open page every third of the lease; renders the claim banner."""
    claim_error = None
    try:
        await claims.claim(runtime.sessions, review_id, agent, runtime.settings.claim_lease)
    except Conflict as exc:
        claim_error = exc.message
    context = await _context(runtime, review_id, agent, claim_error)
    return render_partial(request, "partials/_claim.html", context)


@router.post("/{review_id}/release")
async def release_claim(review_id: str, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    """Sent by the page when the agent leaves it (navigator.sendBeacon)."""
    released = await claims.release(runtime.sessions, review_id, agent)
    return Response(status_code=204 if released else 409)


@router.post("/{review_id}/diff")
async def preview_diff(
    request: Request,
    review_id: str,
    agent: CurrentAgent,
    runtime: RuntimeDep,
    text: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    context = await _context(runtime, review_id, agent)
    context["segments"] = diff_segments(context["exchange"].candidate_text, text)
    return render_partial(request, "partials/_diff.html", context)


@router.post("/{review_id}/decide")
async def decide(
    request: Request,
    review_id: str,
    agent: CurrentAgent,
    runtime: RuntimeDep,
    action: Annotated[Action, Form()],
    text: Annotated[str | None, Form(max_length=100_000)] = None,
    comment: Annotated[str, Form(max_length=2000)] = "",
    tags: Annotated[list[str] | None, Form()] = None,
    canned: Annotated[int | None, Form()] = None,
) -> Response:
    if action == Action.OVERRIDE and canned is not None:
        _, responses = canned_responses()
        if not 0 <= canned < len(responses):
            raise InvalidRequest("No such canned response.", param="canned")
        text = responses[canned].text
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
            tags=tags or [],
            audit_tier=runtime.settings.audit.tier,
        )
    except (Conflict, Forbidden, InvalidRequest) as exc:
        context = await _context(runtime, review_id, agent)
        context.update(error=exc.message, draft=text)
        return render(request, "review.html", context, status_code=exc.status_code)
    tier = decided.decision.from_tier or decided.review.tier
    return RedirectResponse(f"/console/?tier={tier}&decided={review_id}", status_code=303)
