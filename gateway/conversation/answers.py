"""What a client is told about an exchange as it stands: the `hitl` block and headers, and the completion it
receives (never the unreviewed candidate of a held answer). The request path and the review desk both answer
with it."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from gateway.conversation import completion
from gateway.conversation.chat import ChatRequest
from gateway.models import DeadlineOutcome, Exchange, ExchangeStatus, Review


def candidate_text(response: dict[str, Any]) -> str:
    """The text an agent reviews: the first choice's content, or its tool calls."""
    message = response["choices"][0].get("message") or {}
    if message.get("content"):
        return str(message["content"])
    if message.get("tool_calls"):
        return json.dumps(message["tool_calls"], indent=2)
    return ""


class HitlStatus(StrEnum):
    """What the client is told in `hitl.status`: the exchange's status, but `pending` while it is held."""

    RELEASED = "released"
    APPROVED = "approved"
    EDITED = "edited"
    OVERRIDDEN = "overridden"
    RELEASED_ON_DEADLINE = "released_on_deadline"
    PENDING = "pending"
    CANCELLED = "cancelled"
    REUSED = "reused"


def replaced(response: dict[str, Any], text: str) -> dict[str, Any]:
    """`response` answering `text` instead: one choice, no logprobs (they were the other answer's)."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text, "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }
    return {**response, "choices": [choice]}


def hitl_status(exchange: Exchange) -> HitlStatus:
    return HitlStatus.PENDING if exchange.status == ExchangeStatus.HELD else HitlStatus(exchange.status)


def hitl_block(exchange: Exchange, review: Review | None, poll_url: str | None) -> dict[str, Any]:
    status = hitl_status(exchange)
    block: dict[str, Any] = {"status": status, "confidence": exchange.confidence, "exchange_id": exchange.id}
    if review is not None:
        block["review_id"] = review.id
        block["tier"] = review.tier
    if status == HitlStatus.PENDING:
        block["poll_url"] = poll_url
    if status == HitlStatus.REUSED:
        block["reused_from"] = (exchange.signals.get("reused") or {}).get("review_id")
    return block


def hitl_headers(hitl: dict[str, Any]) -> dict[str, str]:
    """The `hitl` block as response headers, for clients that drop unknown body fields (LangChain, agent
    frameworks): status, exchange id and confidence always (`unscored` when there is none); the review id
    and poll URL while the answer is held."""
    confidence = hitl.get("confidence")
    headers = {
        "x-hitl-status": str(hitl["status"]),
        "x-hitl-exchange-id": str(hitl["exchange_id"]),
        "x-hitl-confidence": "unscored" if confidence is None else f"{confidence:.4f}",
    }
    if hitl.get("review_id"):
        headers["x-hitl-review-id"] = str(hitl["review_id"])
    if hitl.get("poll_url"):
        headers["x-hitl-poll-url"] = str(hitl["poll_url"])
    if hitl.get("reused_from"):
        headers["x-hitl-reused-from"] = str(hitl["reused_from"])
    return headers


def delivered(
    exchange: Exchange,
    chat: ChatRequest,
    hitl: dict[str, Any],
    placeholder: str,
    outcome: DeadlineOutcome = DeadlineOutcome.PLACEHOLDER,
) -> dict[str, Any]:
    """The completion the client receives for the exchange as it stands now. Never the unreviewed candidate,
    unless the tier opted in to release it at the deadline. A held exchange answers with the placeholder,
    as content or (`outcome` refusal) as a refusal."""
    status = exchange.status
    released = (
        ExchangeStatus.RELEASED,
        ExchangeStatus.APPROVED,
        ExchangeStatus.RELEASED_ON_DEADLINE,
        ExchangeStatus.REUSED,
    )
    if status in released:
        return completion.as_released(exchange.response, chat, exchange.id, hitl)
    if status == ExchangeStatus.EDITED and exchange.final_tool_calls:
        return completion.with_tool_calls(exchange.response, chat, exchange.id, exchange.final_tool_calls, hitl)
    if status in (ExchangeStatus.EDITED, ExchangeStatus.OVERRIDDEN):
        assert exchange.final_text is not None
        return completion.with_text(exchange.response, chat, exchange.id, exchange.final_text, hitl)
    if outcome == DeadlineOutcome.REFUSAL:
        return completion.with_refusal(exchange.response, chat, exchange.id, placeholder, hitl)
    return completion.with_text(exchange.response, chat, exchange.id, placeholder, hitl)
