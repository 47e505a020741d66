"""Decisions: the one way a review gets decided, from the console or anywhere else (through the review desk).

A review moves from `open` to `decided` through the guarded update (`guard.py`) that also checks the claim,
so when two agents decide the same review at once exactly one wins and the other gets
`ReviewAlreadyDecided` (or `ClaimedByOther` while someone else holds it). The decision, the exchange's
final text, the preference pair and the audit-trail event commit together; the desk wakes waiting
clients after the commit.

An escalation is a decision too: the review moves to the next tier up with a reason and stays open.
Any agent may decide an audit review (a released answer sampled for a label); it changes nothing the
client received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import notices
from gateway.conversation import answers
from gateway.conversation.chat import ChatRequest
from gateway.conversation.prompt_keys import prompt_key
from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.models import (
    DECIDED_STATUS,
    Action,
    Agent,
    Decision,
    EventKind,
    Exchange,
    ExchangeStatus,
    PreferencePair,
    Review,
    ReviewEvent,
    ReviewKind,
    ReviewStatus,
)
from gateway.operations import tracing
from gateway.review import approved_answers, diffs, shadows, structured_edits, tool_edits
from gateway.review.guard import guarded_update
from gateway.review.sandbox import Sandbox, TooSlow
from gateway.review.tiers import Tiers
from gateway.webhooks import events
from gateway.webhooks.events import EventType

# Why an answer was changed or escalated; the console offers these, exports carry them.
REASON_TAGS = ("wrong-facts", "incomplete", "tone", "policy", "unsafe", "off-topic", "formatting", "other")


@dataclass(frozen=True)
class Decided:
    decision: Decision
    exchange: Exchange
    review: Review
    pair: PreferencePair | None


@dataclass(frozen=True)
class _Final:
    """What the client receives: text, or (an edit of a held tool call) the calls with the agent's arguments;
    and what the decision is (an edit that changes nothing is an approval)."""

    action: Action
    text: str
    tool_calls: list[dict[str, Any]] | None = None


def normalized(text: str) -> str:
    """Line endings as `\n`: a browser sends a form's text with `\r\n`, which would otherwise reach the client
    and the training data."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _same_words(left: str, right: str) -> bool:
    """Equal once whitespace is normalized: such an edit changes nothing the client reads."""
    return left.split() == right.split()


async def _final(
    action: Action, text: str | None, arguments: dict[str, str] | None, exchange: Exchange, sandbox: Sandbox
) -> _Final:
    calls = tool_edits.candidate_calls(exchange.response)
    candidate = exchange.candidate_text
    text = None if text is None else normalized(text)
    sent = candidate[: exchange.released_chars or 0]  # streamed to the client already: it stands, whatever is decided
    if sent and text is not None and text.strip() and not text.startswith(sent):
        text = sent + text  # the agent wrote the rest
    if arguments is not None and (action not in (Action.APPROVE, Action.EDIT) or not calls):
        raise InvalidRequest("Only an edit of an answer with tool calls takes tool-call arguments.", param="arguments")
    if action == Action.APPROVE:
        _nothing_lost(text, arguments, calls, candidate)
        return _Final(Action.APPROVE, candidate)
    if action == Action.EDIT and calls:
        if arguments is None:
            raise InvalidRequest(
                "An edit of a tool call changes its arguments; to answer with text instead, override.",
                param="arguments",
            )
        edited = await tool_edits.edited(exchange.request, exchange.response, arguments, sandbox)
        if tool_edits.same_calls(edited, calls):
            return _Final(Action.APPROVE, candidate)
        return _Final(Action.EDIT, json.dumps(edited, indent=2, ensure_ascii=False), edited)
    if text is None or not text.strip():
        raise InvalidRequest(f"An {action} needs the text the client should receive.", param="text")
    if not calls and _same_words(text, candidate):
        # The same answer: an approval (a pair whose chosen and rejected answers agree teaches a model nothing).
        return _Final(Action.APPROVE, candidate)
    await structured_edits.check(exchange.request, text, sandbox)
    return _Final(action, text)


def _nothing_lost(
    text: str | None, arguments: dict[str, str] | None, calls: list[dict[str, Any]], candidate: str
) -> None:
    """An approval sends the candidate as it is: refused while the agent's drafts say otherwise, so nothing typed
    is thrown away without a word."""
    if calls:
        if text is not None and text.strip():
            raise InvalidRequest(
                'You wrote a text answer: send it with "Answer with text", or clear it to approve the calls.',
                param="text",
            )
        changed = tool_edits.changed(calls, arguments or {})
        if changed:
            raise InvalidRequest(
                f"You changed the arguments of {changed[0]}: send them as an edit, or undo the change to approve"
                " the calls as the model made them.",
                param="arguments",
            )
    elif text is not None and text.strip() and not _same_words(text, candidate):
        raise InvalidRequest(
            'The answer box holds changes that "Approve unchanged" would throw away: send them as an edit,'
            " or undo them to approve.",
            param="text",
        )


def _assistant(content: Any, tool_calls: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An answer as training data keeps it: an assistant message, tool calls structured, never a JSON string."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def candidate_message(response: dict[str, Any]) -> dict[str, Any]:
    """The model's answer (its first choice) as an assistant message, tool calls structured."""
    candidate = (response.get("choices") or [{}])[0].get("message") or {}
    return _assistant(candidate.get("content"), tool_edits.candidate_calls(response))


def _checked_tags(tags: list[str]) -> list[str]:
    unknown = sorted(set(tags) - set(REASON_TAGS))
    if unknown:
        raise InvalidRequest(f"Unknown reason tags {unknown}; use {list(REASON_TAGS)}.", param="tags")
    return sorted(set(tags), key=REASON_TAGS.index)


async def _reviewed(session: AsyncSession, review_id: str, agent: Agent, tiers: Tiers) -> tuple[Review, Exchange]:
    """The review and its exchange, once the agent's role is allowed to decide it."""
    review = await session.get(Review, review_id)
    if review is None:
        raise NotFound(f"No review with id {review_id!r}.")
    if not tiers.may_decide_review(agent.role, review):
        raise Forbidden(f"The {agent.role} role cannot decide reviews in the {review.tier!r} tier.")
    await shadows.may_decide(session, review, agent)
    exchange = await session.get(Exchange, review.exchange_id)
    assert exchange is not None
    return review, exchange


async def check(
    session: AsyncSession,
    tiers: Tiers,
    sandbox: Sandbox,
    *,
    review_id: str,
    agent: Agent,
    action: Action,
    text: str | None = None,
    arguments: dict[str, str] | None = None,
    tags: list[str] | None = None,
) -> tuple[Review, Exchange]:
    """Everything `decide` (or, for `Action.ESCALATE`, `escalate`, with `text` as the reason) would refuse,
    refused now, without deciding: a decision kept for its undo window."""
    if action not in DECIDED_STATUS and action != Action.ESCALATE:
        raise InvalidRequest(f"{action!r} is not a decision.", param="action")
    _checked_tags(tags or [])
    review, exchange = await _reviewed(session, review_id, agent, tiers)
    if action == Action.ESCALATE:
        if not (text or "").strip():
            raise InvalidRequest("An escalation needs a reason for the next tier.", param="comment")
        tiers.above(review)
    else:
        await _final(action, text, arguments, exchange, sandbox)
    return review, exchange


async def decide(
    session: AsyncSession,
    tiers: Tiers,
    now: datetime,
    sandbox: Sandbox,
    *,
    review_id: str,
    agent: Agent,
    action: Action,
    text: str | None = None,
    arguments: dict[str, str] | None = None,
    comment: str = "",
    tags: list[str] | None = None,
) -> Decided:
    """Approve, edit or override a review and commit; waking its waiters is the caller's next step.

    An edit of an answer with tool calls takes `arguments` (call id -> the agent's JSON) instead of `text`; an
    approval takes the agent's drafts, if any, to refuse when they differ from what it would send. Text is stored
    with `\n` line endings; an edit or override identical to the candidate is stored as an approval."""
    assert agent.id is not None
    if action not in DECIDED_STATUS:
        raise InvalidRequest(f"{action!r} is not a decision that closes a review.", param="action")
    tags = _checked_tags(tags or [])
    review, exchange = await _reviewed(session, review_id, agent, tiers)
    audit = review.kind == ReviewKind.AUDIT
    final = await _final(action, text, arguments, exchange, sandbox)
    action = final.action
    values = {"status": ReviewStatus.DECIDED, "decided_at": now, "claimed_by": None, "claim_expires_at": None}
    # The kind as read: a hold whose client got the candidate at its deadline meanwhile is an audit now.
    await guarded_update(session, review_id, agent.id, now, values, col(Review.kind) == review.kind)
    decision = Decision(
        review_id=review_id,
        agent_id=agent.id,
        action=action,
        text=None if action == Action.APPROVE else final.text,
        tool_calls=final.tool_calls,
        comment=comment,
        tags=tags,
        from_tier=review.tier,
        prompt_key=prompt_key(exchange.request),
        created_at=now,
    )
    session.add(decision)
    # A check on a reviewer (a gold item, a second review) reaches no client: it teaches and announces nothing.
    check = review.shadow is not None
    if exchange.status != ExchangeStatus.REUSED and not check:  # a reused answer is remembered once, from its review
        approved_answers.remember(session, review, exchange, None if final.tool_calls else final.text, now)
    if not audit:
        # An audited answer reached the client already: the decision labels it, it delivers nothing.
        exchange.status = DECIDED_STATUS[action]
        exchange.final_text = final.text
        exchange.final_tool_calls = final.tool_calls
        exchange.decided_at = now
        session.add(exchange)
    await session.flush()
    assert decision.id is not None
    pair = None
    if action in (Action.EDIT, Action.OVERRIDE) and not check:
        prompt = [dict(message) for message in exchange.request.get("messages", [])]
        candidate = (exchange.response.get("choices") or [{}])[0].get("message") or {}
        rejected = candidate_message(exchange.response)
        # An edited tool call keeps whatever the model said beside its calls; an override is text alone.
        chosen = (
            _assistant(candidate.get("content"), final.tool_calls) if final.tool_calls else _assistant(final.text, None)
        )
        pair = PreferencePair(
            exchange_id=exchange.id,
            decision_id=decision.id,
            prompt=prompt,
            chosen=final.text,
            rejected=exchange.candidate_text,
            chosen_message=chosen,
            rejected_message=rejected,
            action=action,
            created_at=now,
        )
        session.add(pair)
    detail: dict[str, object] = {"action": str(action), "decision_id": decision.id, "tags": tags}
    if action != Action.APPROVE:
        detail["diff"] = await _trail_diff(exchange.candidate_text, final.text, sandbox)
    session.add(ReviewEvent(review_id=review_id, kind=EventKind.DECIDED, agent_id=agent.id, detail=detail, at=now))
    if not audit and not check:
        completion = answers.delivered(
            exchange, ChatRequest.model_validate(exchange.request), answers.hitl_block(exchange, review, None), ""
        )
        status = answers.hitl_status(exchange)
        await events.record(session, EventType.DECIDED, review, exchange.id, now, status=status, completion=completion)
    await notices.announce(session, review_id)  # other processes hear of it when, and only if, this commits
    await session.commit()
    with tracing.span("hitl.decision", hitl__review_id=review_id, hitl__tier=review.tier) as traced:
        # 1: the answer was right as it stood; 0: the agent changed it. The response id ties it to the request.
        tracing.evaluated(traced, "hitl.human_review", float(action == Action.APPROVE), str(action), "", exchange.id)
    return Decided(decision=decision, exchange=exchange, review=review, pair=pair)


async def escalate(
    session: AsyncSession,
    tiers: Tiers,
    now: datetime,
    *,
    review_id: str,
    agent: Agent,
    reason: str,
    tags: list[str] | None = None,
) -> Decided:
    """Send a review to the next tier up with a reason; it stays open, unclaimed, and the trail says why."""
    assert agent.id is not None
    tags = _checked_tags(tags or [])
    review, exchange = await _reviewed(session, review_id, agent, tiers)
    if not reason.strip():
        raise InvalidRequest("An escalation needs a reason for the next tier.", param="comment")
    source, target = review.tier, tiers.above(review)
    moved = {"tier": target, "claimed_by": None, "claim_expires_at": None}
    await guarded_update(session, review_id, agent.id, now, moved, col(Review.tier) == source)
    decision = Decision(
        review_id=review_id,
        agent_id=agent.id,
        action=Action.ESCALATE,
        comment=reason,
        tags=tags,
        from_tier=source,
        to_tier=target,
        created_at=now,
    )
    session.add(decision)
    detail = {"from": source, "to": target, "reason": reason, "tags": tags}
    session.add(ReviewEvent(review_id=review_id, kind=EventKind.ESCALATED, agent_id=agent.id, detail=detail, at=now))
    moved_to = {"tier": target, "from_tier": source, "to_tier": target}
    if review.shadow is None:  # a gold item's or a second review's client is nobody: nobody is told
        await events.record(session, EventType.ESCALATED, review, exchange.id, now, **moved_to)
    await session.commit()
    await session.refresh(review)
    return Decided(decision=decision, exchange=exchange, review=review, pair=None)


async def _trail_diff(before: str, after: str, sandbox: Sandbox) -> str:
    """The audit trail's diff of what the agent changed; a note instead when it would take too long to make (the
    decision stands either way: the trail keeps what was sent)."""
    try:
        return await sandbox.run(diffs.unified, before, after, what="The trail's diff")
    except TooSlow:
        return f"(no diff: it took longer than {sandbox.seconds:g} s to compute)"
