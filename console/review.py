"""A review: the conversation, the candidate as a heat map, every signal and why it was held, the
client's wait, the audit trail; the claim that comes with opening it; and the decision form."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import StringConstraints

from console import guidelines, heatmap
from console.auth import CurrentAgent, admin_only
from console.rendering import DEADLINE_OUTCOMES, render
from gateway.deps import DeskDep, RuntimeDep
from gateway.errors import Conflict, Forbidden, InvalidRequest
from gateway.models import Action, Agent, DeadlineOutcome, Exchange, PendingDecision, ReviewStatus, Role
from gateway.prompt_templates import canned_responses
from gateway.review import diffs, explanations
from gateway.review.decisions import REASON_TAGS
from gateway.review.desk import ReviewDesk
from gateway.runtime import Runtime

router = APIRouter(prefix="/console/reviews", include_in_schema=False)


def _told(exchange: Exchange, runtime: Runtime) -> str | None:
    """What the client has been told already, when its wait ran out; None while it waits (or never waited)."""
    outcome = exchange.deadline_outcome
    if outcome == DeadlineOutcome.PLACEHOLDER:
        return f"the placeholder: “{runtime.prompts.get('placeholder').text.strip()}”"
    if outcome == DeadlineOutcome.REFUSAL:
        return f"a refusal: “{runtime.prompts.get('placeholder').text.strip()}”"
    if outcome == DeadlineOutcome.ERROR:
        return "an error (504 review_pending) naming this review"
    if outcome == DeadlineOutcome.RELEASE:
        return "the model's answer, unreviewed"
    return None


async def _active_answer(desk: ReviewDesk, runtime: Runtime, exchange: Exchange, review_id: str) -> Any:
    """The approved answer the gateway would serve again for this question, when the policy reuses answers."""
    reuse = runtime.relay.policy.spec.reuse
    return None if reuse is None else await desk.active_answer(exchange, review_id, reuse.share)


async def _context(
    desk: ReviewDesk, runtime: Runtime, review_id: str, agent: Agent, claim_error: str | None = None
) -> dict[str, Any]:
    found = await desk.record(review_id)
    review, exchange = found.review, found.exchange
    now = runtime.clock.now()
    expires = review.claim_expires_at
    claimed = expires is not None and expires > now
    canned_version, canned = canned_responses()
    return {
        "agent": agent,
        "review": review,
        "exchange": exchange,
        "tokens": heatmap.tokens(exchange.response),
        "calls": found.tool_calls(),
        "argument_drafts": {},
        "decisions": found.decisions,
        "trail": found.trail,
        "names": found.names,
        "error": None,
        "draft": None,
        "waiting": desk.waiting(review_id),
        "seconds_left": max(0, int((review.deadline_at - now).total_seconds())),
        "held_by_me": claimed and review.claimed_by == agent.id,
        "holder": found.holder_name() if claimed and review.claimed_by != agent.id else None,
        "claim_error": claim_error,
        "lease": desk.lease,
        "can_decide": desk.may_decide(agent, review.tier),
        "can_escalate": desk.tiers.can_escalate(review.tier),
        "reason_tags": REASON_TAGS,
        "canned": canned,
        "canned_version": canned_version,
        "segments": [],
        "why_held": explanations.why_held(exchange),
        "said": explanations.sentences(exchange),
        "deadline_outcome": DEADLINE_OUTCOMES[runtime.policy.on_deadline(review.tier, exchange.request)],
        "told": _told(exchange, runtime),
        "precedents": await desk.precedents(found),
        "guidelines": guidelines.rendered(runtime.settings.guidelines_path),
        "webhook": found.webhook,
        "can_take_next": desk.may_decide(agent, review.tier) and review.tier in desk.tiers.queues,
        "pending": await desk.pending(review_id),
        "answer": await desk.approved_answer(review_id),
        "approved": await _active_answer(desk, runtime, exchange, review_id),
        "reused_from": (exchange.signals.get("reused") or {}).get("review_id"),
        "undone": None,
        "comment_draft": "",
        # Only admins see what is gold, and mark it: an agent served a gold item must not tell it from the rest.
        "gold": await desk.is_gold(review_id) if agent.role == Role.ADMIN else None,
    }


@router.get("/{review_id}", name="console_review")
async def review_page(
    request: Request, review_id: str, agent: CurrentAgent, desk: DeskDep, runtime: RuntimeDep
) -> Response:
    """Opening a review claims it (or renews this agent's claim) when the agent may decide it."""
    claim_error = None
    review = await desk.review(review_id)
    if review is not None and review.status == ReviewStatus.OPEN and desk.may_decide(agent, review.tier):
        try:
            await desk.claim(review_id, agent)
        except Conflict as exc:
            claim_error = exc.message
    return render(request, "review.html", await _context(desk, runtime, review_id, agent, claim_error))


@router.post("/{review_id}/claim")
async def renew_claim(
    request: Request, review_id: str, agent: CurrentAgent, desk: DeskDep, runtime: RuntimeDep
) -> Response:
    """Renewed by the open page every third of the lease; renders the claim banner."""
    claim_error = None
    try:
        await desk.claim(review_id, agent)
    except Conflict as exc:
        claim_error = exc.message  # someone else holds it: the banner says who; Forbidden is a 403 page
    context = await _context(desk, runtime, review_id, agent, claim_error)
    return render(request, "partials/_claim.html", context)


@router.post("/{review_id}/release")
async def release_claim(review_id: str, agent: CurrentAgent, desk: DeskDep) -> Response:
    """Sent by the page when the agent leaves it (navigator.sendBeacon)."""
    released = await desk.release(review_id, agent)
    return Response(status_code=204 if released else 409)


@router.post("/{review_id}/diff")
async def preview_diff(
    request: Request,
    review_id: str,
    agent: CurrentAgent,
    desk: DeskDep,
    runtime: RuntimeDep,
    text: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    # Fired as the agent types: only the candidate's text is read, not the whole review.
    before = await desk.candidate_text(review_id)
    segments = await desk.sandbox.run(diffs.segments, before, text, what="The diff preview")
    return render(request, "partials/_diff.html", {"agent": agent, "segments": segments})


@router.post("/{review_id}/decide")
async def decide(
    request: Request,
    review_id: str,
    agent: CurrentAgent,
    desk: DeskDep,
    runtime: RuntimeDep,
    action: Annotated[Action, Form()],
    text: Annotated[str | None, Form(max_length=100_000)] = None,
    comment: Annotated[str, Form(max_length=2000)] = "",
    tags: Annotated[list[str] | None, Form()] = None,
    canned: Annotated[int | None, Form()] = None,
    call: Annotated[list[Annotated[str, StringConstraints(max_length=200)]] | None, Form()] = None,
    arguments: Annotated[list[Annotated[str, StringConstraints(max_length=100_000)]] | None, Form()] = None,
) -> Response:
    """One decision. A held tool call's editor sends each call's id (`call`) with its arguments (`arguments`),
    in the same order; they count for an edit, and an approval is refused while they differ from the model's."""
    if action == Action.OVERRIDE and canned is not None and not (text or "").strip():
        # Choosing a canned response fills the answer box; the text sent wins (the agent may have adapted it).
        _, responses = canned_responses()
        if not 0 <= canned < len(responses):
            raise InvalidRequest("No such canned response.", param="canned")
        text = responses[canned].text
    if len(call or []) != len(arguments or []):
        raise InvalidRequest("Each tool call needs its arguments.", param="arguments")
    drafts = dict(zip(call or [], arguments or [], strict=True))
    try:
        decided = await desk.decide_undoably(
            review_id,
            agent,
            action,
            text=text,
            arguments=drafts if action in (Action.APPROVE, Action.EDIT) and drafts else None,
            comment=comment,
            tags=tags or [],
        )
    except (Conflict, Forbidden, InvalidRequest) as exc:
        # The review page again, with the refusal and the agent's drafts: nothing typed is lost.
        context = await _context(desk, runtime, review_id, agent)
        context.update(error=exc.message, draft=text, argument_drafts=drafts)
        return render(request, "review.html", context, status_code=exc.status_code)
    if isinstance(decided, PendingDecision):
        pending_on = await desk.review(review_id)
        assert pending_on is not None  # the decision was just taken on it
        tier, said = pending_on.tier, f"decided={review_id}&undo={review_id}"
    else:
        tier, said = decided.decision.from_tier or decided.review.tier, f"decided={review_id}"
    # Decide and open next: the most urgent review of the same tier, or the queue when there is none.
    following = await desk.next(agent, tier, skip=review_id)
    if following is None:
        return RedirectResponse(f"/console/?tier={tier}&{said}&empty=1", status_code=303)
    return RedirectResponse(f"/console/reviews/{following.id}?{said}", status_code=303)


@router.post("/{review_id}/answer")
async def answer_status(
    review_id: str,
    agent: CurrentAgent,
    desk: DeskDep,
    status: Annotated[str, Form(max_length=16)],
) -> Response:
    """Pause, activate or retire the answer this review's decision left to be served again."""
    await desk.set_answer_status(review_id, status, agent)
    return RedirectResponse(f"/console/reviews/{review_id}#answer", status_code=303)


@router.post("/{review_id}/gold")
async def mark_gold(review_id: str, agent: CurrentAgent, desk: DeskDep) -> Response:
    """An admin marks a decided review gold: its decision is what agents served it are scored against."""
    await desk.mark_gold(review_id, admin_only(agent, "mark gold items"))
    return RedirectResponse(f"/console/reviews/{review_id}?gold=marked", status_code=303)


@router.post("/{review_id}/gold/remove")
async def unmark_gold(review_id: str, agent: CurrentAgent, desk: DeskDep) -> Response:
    admin_only(agent, "mark gold items")
    await desk.unmark_gold(review_id)
    return RedirectResponse(f"/console/reviews/{review_id}?gold=removed", status_code=303)


@router.post("/{review_id}/undo")
async def undo(request: Request, review_id: str, agent: CurrentAgent, desk: DeskDep, runtime: RuntimeDep) -> Response:
    """Take a decision back within its undo window: the review page again, with what the agent had written."""
    taken = await desk.undo(review_id, agent)
    context = await _context(desk, runtime, review_id, agent)
    if taken is None:
        someone, review = context["pending"], context["review"]
        if someone is not None and someone.agent_id != agent.id:
            context["error"] = "Only the agent who made this decision can undo it."
        elif review.status == ReviewStatus.OPEN:
            context["error"] = "There is no decision of yours on this review to undo."
        else:
            context["error"] = "Too late to undo: the decision was made, and the client has it."
        return render(request, "review.html", context, status_code=409)
    context.update(
        draft=taken.text, argument_drafts=dict(taken.arguments or {}), comment_draft=taken.comment, undone=taken.action
    )
    return render(request, "review.html", context)
