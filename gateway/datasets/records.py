"""A record per closing decision (approve, edit, override), with everything a data team asks where it came
from, read from the database in a stream.

The stream is sorted by prompt key, newest decision first within a prompt, so deduplication keeps the newest
with constant memory, and each prompt's records arrive together. Only decisions up to a snapshot (the highest
decision id when the export began) are read, so the export's cursor says exactly what it covered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.datasets.filters import CLOSING, Filters
from gateway.models import Action, Agent, Decision, Exchange, PreferencePair, Review
from gateway.review.decisions import candidate_message, normalized

BATCH = 500


@dataclass(frozen=True)
class Record:
    """One decision as training data. `candidate` is the model's answer, `final` the one the client got (the
    candidate itself when approved); both are assistant messages with any tool calls structured."""

    decision_id: int
    prompt_key: str
    prompt: list[dict[str, Any]]
    tools: list[Any] | None
    candidate: dict[str, Any]
    final: dict[str, Any]
    action: Action
    tags: list[str]
    comment: str
    agent: str
    tier: str
    kind: str  # hold (the client waited for it) or audit (sampled after release)
    review_id: str
    exchange_id: str
    model: str
    upstream_model: str
    policy_version: str
    calibrator: str
    confidence: float | None
    signals: dict[str, Any]
    asked_at: datetime
    held_at: datetime
    decided_at: datetime

    @property
    def paired(self) -> bool:
        """An edit or an override: chosen = the final answer, rejected = the candidate."""
        return self.action in (Action.EDIT, Action.OVERRIDE)

    @property
    def candidate_is_negative(self) -> bool:
        """The candidate as an example of what not to answer: overridden, or edited with a reason tag."""
        return self.action == Action.OVERRIDE or (self.action == Action.EDIT and bool(self.tags))

    def provenance(self) -> dict[str, Any]:
        """Where the record came from, as JSON values (the `metadata` of an exported row)."""
        return {
            "decision_id": self.decision_id,
            "review_id": self.review_id,
            "exchange_id": self.exchange_id,
            "action": str(self.action),
            "tags": self.tags,
            "comment": self.comment,
            "agent": self.agent,
            "tier": self.tier,
            "kind": self.kind,
            "model": self.model,
            "upstream_model": self.upstream_model,
            "policy_version": self.policy_version,
            "calibrator": self.calibrator,
            "confidence": self.confidence,
            "asked_at": self.asked_at.isoformat(),
            "held_at": self.held_at.isoformat(),
            "decided_at": self.decided_at.isoformat(),
        }


D, R, E, A, P = (sa.inspect(model).local_table.c for model in (Decision, Review, Exchange, Agent, PreferencePair))


def _selected(filters: Filters, snapshot: int) -> sa.Select[Any]:
    columns = [
        D.id, D.prompt_key, D.action, D.text, D.tool_calls, D.comment, D.tags, D.from_tier, D.created_at,
        A.username, R.id.label("review_id"), R.kind, R.created_at.label("held_at"),
        E.id.label("exchange_id"), E.model, E.upstream_model, E.policy_version, E.calibrator, E.confidence,
        E.signals, E.request, E.response[("choices", 0, "message")].label("answer"), E.created_at.label("asked_at"),
        P.chosen_message, P.rejected_message,
    ]  # fmt: skip
    query = (
        sa.select(*columns)
        .select_from(D.id.table)
        .join(R.id.table, R.id == D.review_id)
        .join(E.id.table, E.id == R.exchange_id)
        .join(A.id.table, A.id == D.agent_id)
        .outerjoin(P.id.table, P.decision_id == D.id)
        .where(D.action.in_([str(action) for action in filters.actions or CLOSING]), D.id <= snapshot)
        .where(R.shadow.is_(None))  # gold items and second reviews check reviewers: never training data
    )
    return _narrowed(query, filters)


def _narrowed(query: sa.Select[Any], filters: Filters) -> sa.Select[Any]:
    if filters.since is not None:
        query = query.where(D.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(D.created_at < filters.until)
    if filters.after_cursor is not None:
        query = query.where(D.id > filters.after_cursor)
    if filters.models:
        query = query.where(E.model.in_(filters.models))
    if filters.tiers:
        query = query.where(D.from_tier.in_(filters.tiers))
    if filters.agents:
        query = query.where(A.username.in_(filters.agents))
    if filters.min_confidence is not None:
        query = query.where(E.confidence >= filters.min_confidence)
    if filters.max_confidence is not None:
        query = query.where(E.confidence <= filters.max_confidence)
    return query


async def snapshot(engine: AsyncEngine) -> int:
    """The highest decision id now: an export reads up to it, and its manifest's next cursor is this."""
    async with engine.connect() as connection:
        found = await connection.scalar(sa.select(sa.func.max(D.id)))
    return int(found or 0)


async def count(engine: AsyncEngine, filters: Filters, upto: int) -> int:
    """How many decisions the filters take (before tags, quality and deduplication): a progress bar's total."""
    query = _selected(filters, upto).with_only_columns(sa.func.count()).order_by(None)
    async with engine.connect() as connection:
        return int(await connection.scalar(query) or 0)


def _record(row: Any) -> Record:
    request = row.request or {}
    # Only the candidate's message is read, not the stored body: a held answer keeps every token's logprobs.
    candidate = candidate_message({"choices": [{"message": row.answer if isinstance(row.answer, dict) else {}}]})
    action = Action(row.action)
    final = row.chosen_message if row.chosen_message is not None and action != Action.APPROVE else candidate
    if isinstance(final.get("content"), str):
        # Decisions made before line endings were normalized kept a browser's \r\n.
        final = {**final, "content": normalized(final["content"])}
    return Record(
        decision_id=row.id,
        prompt_key=row.prompt_key or "",
        prompt=[dict(message) for message in request.get("messages") or []],
        tools=request.get("tools") or None,
        candidate=row.rejected_message if row.rejected_message is not None else candidate,
        final=final,
        action=action,
        tags=list(row.tags or []),
        comment=row.comment or "",
        agent=row.username,
        tier=row.from_tier or "",
        kind=str(row.kind),
        review_id=row.review_id,
        exchange_id=row.exchange_id,
        model=row.model,
        upstream_model=row.upstream_model,
        policy_version=row.policy_version,
        calibrator=row.calibrator,
        confidence=row.confidence,
        signals=dict(row.signals or {}),
        asked_at=row.asked_at,
        held_at=row.held_at,
        decided_at=row.created_at,
    )


async def stream(engine: AsyncEngine, filters: Filters, upto: int) -> AsyncIterator[Record]:
    """The records the filters take, by prompt key, newest first within a prompt; never all in memory."""
    query = _selected(filters, upto).order_by(D.prompt_key, D.id.desc())
    wanted_tags = set(filters.tags)
    async with engine.connect() as connection:
        rows = await connection.stream(query.execution_options(yield_per=BATCH))
        async for row in rows:
            if wanted_tags and not wanted_tags.intersection(row.tags or ()):
                continue
            yield _record(row)
