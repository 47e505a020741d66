"""Webhook events, written to the outbox inside the transaction that makes them.

A review's API key with a webhook endpoint is told, Standard Webhooks style (`{"type", "timestamp", "data"}`):
- `review.decided`: an agent approved, edited or overrode a held answer; `data.completion` is the final
  chat.completion, as the client receives it;
- `review.escalated`: the review moved up a tier (`data.from_tier`, `data.to_tier`); still open;
- `review.deadline_passed`: the client's wait ran out; `data.outcome` says what it got (placeholder, refusal,
  error, release); the decision, when it comes, is a `review.decided`.
Audit reviews (answers the client already has) send nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import ApiKey, Review, WebhookDelivery


class EventType(StrEnum):
    DECIDED = "review.decided"
    ESCALATED = "review.escalated"
    DEADLINE_PASSED = "review.deadline_passed"


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def record(
    session: AsyncSession, event: EventType, review: Review, exchange_id: str, now: datetime, **data: Any
) -> WebhookDelivery | None:
    """Add the event to the outbox in the session's transaction (it commits with it, or not at all); None
    when the review's API key has no webhook endpoint."""
    return outboxed(session, await session.get(ApiKey, review.api_key_id), event, review, exchange_id, now, **data)


def outboxed(
    session: AsyncSession,
    key: ApiKey | None,
    event: EventType,
    review: Review,
    exchange_id: str,
    now: datetime,
    **data: Any,
) -> WebhookDelivery | None:
    """`record`, with the review's API key already at hand (many events at once: one read of their keys)."""
    if key is None or key.id is None or not key.webhook_url:
        return None
    payload = {
        "type": str(event),
        "timestamp": _stamp(now),
        "data": {"review_id": review.id, "exchange_id": exchange_id, "tier": review.tier, **data},
    }
    delivery = WebhookDelivery(
        event_id=f"msg_{uuid.uuid4().hex}",
        api_key_id=key.id,
        url=key.webhook_url,
        event_type=str(event),
        payload=payload,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    return delivery
