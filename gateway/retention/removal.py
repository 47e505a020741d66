"""Removing what the gateway holds of some exchanges: the whole record (the exchange, its reviews, their
decisions, trail, pending decisions, preference pairs, approved answers, gold marks and webhook events), or only
the bodies (what was asked and answered, and every text written about it), keeping the decision and its label,
the confidence and the signals for calibration. The copies made of an exchange for gold items and second reviews
go with it: they hold the same words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import (
    ApprovedAnswer,
    Decision,
    Exchange,
    GoldItem,
    PendingDecision,
    PreferencePair,
    Review,
    ReviewEvent,
    WebhookDelivery,
)

CHUNK = 500  # ids per statement: well within every database's limit on bound parameters
PURGED = {"purged": True}  # what a purged exchange's request and response become


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start : start + CHUNK])


async def _with_copies(session: AsyncSession, exchange_ids: Sequence[str]) -> list[str]:
    """The exchanges and the copies made of them, the copies first (they refer to their originals)."""
    copies: list[str] = []
    for chunk in _chunks(exchange_ids):
        copies += (await session.exec(select(Exchange.id).where(col(Exchange.copy_of).in_(chunk)))).all()
    return [*copies, *(exchange_id for exchange_id in exchange_ids if exchange_id not in set(copies))]


async def _reviews_of(session: AsyncSession, exchange_ids: list[str]) -> list[str]:
    return list((await session.exec(select(Review.id).where(col(Review.exchange_id).in_(exchange_ids)))).all())


async def _drop_events(session: AsyncSession, exchange_ids: set[str]) -> int:
    """Delete the webhook events about these exchanges (their payload names the exchange); how many."""
    found = []
    for row_id, payload in (await session.exec(select(WebhookDelivery.id, WebhookDelivery.payload))).all():
        if ((payload or {}).get("data") or {}).get("exchange_id") in exchange_ids and row_id is not None:
            found.append(row_id)
    dropped = 0
    for start in range(0, len(found), CHUNK):
        chunk = found[start : start + CHUNK]
        dropped += (await session.exec(delete(WebhookDelivery).where(col(WebhookDelivery.id).in_(chunk)))).rowcount or 0
    return dropped


async def remove(session: AsyncSession, exchange_ids: Sequence[str]) -> Counter[str]:
    """Delete every row about these exchanges and their copies (children first); rows deleted per table. Commits."""
    exchange_ids = await _with_copies(session, exchange_ids)
    removed: Counter[str] = Counter({"webhook_outbox": await _drop_events(session, set(exchange_ids))})
    for chunk in _chunks(exchange_ids):
        reviews = await _reviews_of(session, chunk)
        statements: list[tuple[str, Any]] = [
            ("gold_items", delete(GoldItem).where(col(GoldItem.review_id).in_(reviews))),
            ("review_events", delete(ReviewEvent).where(col(ReviewEvent.review_id).in_(reviews))),
            ("pending_decisions", delete(PendingDecision).where(col(PendingDecision.review_id).in_(reviews))),
            ("approved_answers", delete(ApprovedAnswer).where(col(ApprovedAnswer.review_id).in_(reviews))),
            ("preference_pairs", delete(PreferencePair).where(col(PreferencePair.exchange_id).in_(chunk))),
            ("decisions", delete(Decision).where(col(Decision.review_id).in_(reviews))),
            ("reviews", delete(Review).where(col(Review.id).in_(reviews))),
            ("exchanges", delete(Exchange).where(col(Exchange.id).in_(chunk))),
        ]
        for table, statement in statements:
            removed[table] += (await session.exec(statement)).rowcount or 0
    await session.commit()
    return removed


async def empty(session: AsyncSession, exchange_ids: Sequence[str], now: datetime) -> Counter[str]:
    """Delete the bodies of these exchanges and every text about them; keep the decisions (their action, tags
    and label), the confidence and the signals; of their copies too. Rows emptied or deleted per table. Commits."""
    exchange_ids = await _with_copies(session, exchange_ids)
    removed: Counter[str] = Counter({"webhook_outbox": await _drop_events(session, set(exchange_ids))})
    for chunk in _chunks(exchange_ids):
        reviews = await _reviews_of(session, chunk)
        statements: list[tuple[str, Any]] = [
            ("gold_items", update(GoldItem).where(col(GoldItem.review_id).in_(reviews)).values(active=False)),
            ("review_events", update(ReviewEvent).where(col(ReviewEvent.review_id).in_(reviews)).values(detail={})),
            ("approved_answers", delete(ApprovedAnswer).where(col(ApprovedAnswer.review_id).in_(reviews))),
            ("preference_pairs", delete(PreferencePair).where(col(PreferencePair.exchange_id).in_(chunk))),
            (
                "decisions",
                update(Decision)
                .where(col(Decision.review_id).in_(reviews))
                .values(text=None, tool_calls=None, comment=""),
            ),
            (
                "exchanges",
                update(Exchange)
                .where(col(Exchange.id).in_(chunk))
                .values(
                    request=PURGED,
                    response=PURGED,
                    candidate_text="",
                    final_text=None,
                    final_tool_calls=None,
                    purged_at=now,
                ),
            ),
        ]
        for table, statement in statements:
            removed[table] += (await session.exec(statement)).rowcount or 0
    await session.commit()
    return removed
