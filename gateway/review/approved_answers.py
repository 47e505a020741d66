"""Approved answers, served again: an answer an agent approved or wrote is remembered with its decision, and a
later request that asks the same thing (the same normalized conversation, model, tools and structured-output
schema), from the same API key or one the policy groups with it, can get it instead of holding a fresh
candidate that is not confident on its own. Only text answers are remembered: a tool call is an action, and is
never replayed. An agent pauses or retires an answer from the console; only active ones are served.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.conversation.prompt_keys import prompt_key
from gateway.errors import InvalidRequest, NotFound
from gateway.models import Agent, AnswerStatus, ApiKey, ApprovedAnswer, Exchange, Review


def reuse_key(request: dict[str, Any], model: str) -> str:
    """What makes two requests the same question: the prompt key (messages and tool names, normalized), the
    model asked for, the tools' whole definitions and the structured-output schema."""
    canonical = json.dumps(
        [prompt_key(request), model, request.get("tools") or [], request.get("response_format")],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def remember(session: AsyncSession, review: Review, exchange: Exchange, text: str | None, now: datetime) -> None:
    """Keep the answer an agent approved or wrote (`text`; None for tool calls: never replayed)."""
    if text is None or exchange.final_tool_calls or _calls(exchange):
        return
    session.add(
        ApprovedAnswer(
            reuse_key=reuse_key(exchange.request, exchange.model),
            api_key_id=review.api_key_id,
            review_id=review.id,
            text=text,
            created_at=now,
        )
    )


def _calls(exchange: Exchange) -> bool:
    choices = exchange.response.get("choices") or [{}]
    return bool(((choices[0] or {}).get("message") or {}).get("tool_calls"))


async def find(
    session: AsyncSession, key: str, api_key_id: int, groups: Sequence[Sequence[str]]
) -> ApprovedAnswer | None:
    """The newest active answer for `key`, reviewed for this API key or one that shares a group with it."""
    own = await session.get(ApiKey, api_key_id)
    names = {name for group in groups if own is not None and own.name in group for name in group}
    sharing = select(ApiKey.id).where(col(ApiKey.name).in_(names)) if names else None
    keys = col(ApprovedAnswer.api_key_id) == api_key_id
    if sharing is not None:
        keys = keys | col(ApprovedAnswer.api_key_id).in_(sharing)
    query = (
        select(ApprovedAnswer)
        .where(col(ApprovedAnswer.reuse_key) == key, col(ApprovedAnswer.status) == AnswerStatus.ACTIVE, keys)
        .order_by(col(ApprovedAnswer.created_at).desc(), col(ApprovedAnswer.id).desc())
        .limit(1)
    )
    return (await session.exec(query)).first()


async def used(session: AsyncSession, answer_id: int) -> None:
    await session.exec(
        update(ApprovedAnswer).where(col(ApprovedAnswer.id) == answer_id).values(uses=col(ApprovedAnswer.uses) + 1)
    )


async def of_review(session: AsyncSession, review_id: str) -> ApprovedAnswer | None:
    return (await session.exec(select(ApprovedAnswer).where(col(ApprovedAnswer.review_id) == review_id))).first()


async def set_status(session: AsyncSession, answer_id: int, status: str, agent: Agent, now: datetime) -> ApprovedAnswer:
    """Pause, activate or retire an answer; a retired one stays retired."""
    if status not in tuple(AnswerStatus):
        raise InvalidRequest(f"{status!r} is not one of {', '.join(AnswerStatus)}.", param="status")
    answer = await session.get(ApprovedAnswer, answer_id)
    if answer is None:
        raise NotFound(f"No approved answer {answer_id}.")
    if answer.status == AnswerStatus.RETIRED and status != AnswerStatus.RETIRED:
        raise InvalidRequest("A retired answer is never served again.", param="status")
    answer.status, answer.changed_at, answer.changed_by = status, now, agent.id
    session.add(answer)
    await session.commit()
    return answer
