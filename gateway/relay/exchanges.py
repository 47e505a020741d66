"""Exchanges on the request path, as stored: what the upstream proposed and what the policy decided, failures,
deadlines that ran out, retries and deliveries. What the client is told of one is `conversation.answers`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import inserts
from gateway.conversation import answers, completion, wire
from gateway.conversation.chat import ChatRequest
from gateway.errors import NotFound
from gateway.models import (
    ApiKey,
    DeadlineOutcome,
    Dialect,
    EventKind,
    Exchange,
    ExchangeStatus,
    Review,
    ReviewEvent,
    ReviewKind,
    ReviewStatus,
    Route,
    as_stored,
    new_id,
    plain_defaults,
    utcnow,
    wellformed_id,
)
from gateway.policy import Routing
from gateway.scoring.confidence import Score
from gateway.webhooks import events
from gateway.webhooks.events import EventType

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class Candidate:
    """The upstream's answer with its score and route, before anything is stored."""

    response: dict[str, Any]
    score: Score
    routing: Routing
    upstream_ms: float
    status: ExchangeStatus | None = None  # a release's own status (reused); default: released or held by route
    released_chars: int | None = None  # of its text, streamed to the client before the rest was held


@dataclass(frozen=True)
class Audit:
    """A released exchange drawn for the audit queue, and the rate it was drawn at."""

    tier: str
    rate: float


@dataclass(frozen=True)
class Incoming:
    """A chat completion request as the gateway took it: who sent it, its id, its body (typed and raw), and
    what makes a retry of it the same request."""

    request_id: str
    api_key_id: int
    chat: ChatRequest
    raw: dict[str, Any]
    request_hash: str
    idempotency_key: str | None = None
    dialect: Dialect = Dialect.CHAT
    exchange_id: str | None = None  # named before it is stored (a background response); else made with the row

    def fields(self) -> dict[str, Any]:
        """What an exchange for this request holds of it."""
        return {
            "request_id": self.request_id,
            "api_key_id": self.api_key_id,
            "idempotency_key": self.idempotency_key,
            "request_hash": self.request_hash,
            "model": self.chat.model,
            "stream": self.chat.stream,
            "dialect": self.dialect,
            "request": self.raw,
        }

    def exchange(self, **fields: Any) -> Exchange:
        """An exchange for this request, to add to a session; `fields` are what happened to it."""
        named: dict[str, Any] = {"id": self.exchange_id} if self.exchange_id else {}
        return Exchange(**named, **self.fields(), **fields)

    def row(self, **fields: Any) -> dict[str, Any]:
        """Every column of a new exchange for this request, to INSERT as it is; `fields` are what happened to it."""
        named = self.exchange_id or new_id("chatcmpl")
        return {**_DEFAULTS, "id": named, "created_at": utcnow(), **self.fields(), **fields}


_DEFAULTS = plain_defaults(Exchange)


async def record(
    writer: inserts.Inserts,
    sessions: Sessions,
    incoming: Incoming,
    *,
    upstream_model: str,
    candidate: Candidate,
    policy_version: str,
    calibrator: str,
    wait: float,
    audit: Audit | None = None,
) -> tuple[Exchange, Review | None]:
    """Store the exchange, and its review when held, in one commit, before the client hears anything.
    A released exchange is written by `writer`, a held one through `sessions` (both on the same database).

    A released exchange drawn for audit gets an `audit` review too; the client does not wait for it,
    so it is not returned.
    """
    held = candidate.routing.route == Route.HOLD
    api_key_id = incoming.api_key_id
    # What is kept of the answer: in full (every token's top-5 alternatives, about 85 KB for 200 tokens) when an
    # agent will look at it, held or audited, for the heat map; for an answer released unseen, only what the
    # client was sent, so a retry's replay is the same bytes (signals and confidence are stored apart).
    seen = held or audit is not None
    if seen:
        response = candidate.response
    else:  # stored, then sent to the client: its choices are written as JSON once for both
        response = completion.for_client(candidate.response, incoming.chat)
        response = {**response, "choices": wire.Written(response["choices"])}
    row = incoming.row(
        upstream_model=upstream_model,
        response=response,
        candidate_text=answers.candidate_text(candidate.response),
        signals=candidate.score.signals,
        confidence=candidate.score.confidence,
        policy_version=policy_version,
        calibrator=calibrator,
        route=candidate.routing.route,
        tier=candidate.routing.tier,
        reason=candidate.routing.reason,
        status=ExchangeStatus.HELD if held else candidate.status or ExchangeStatus.RELEASED,
        upstream_ms=candidate.upstream_ms,
        released_chars=candidate.released_chars,
    )
    exchange = as_stored(Exchange, row)
    review = None
    if held:
        assert candidate.routing.tier is not None
        review = Review(
            exchange_id=exchange.id,
            api_key_id=api_key_id,
            tier=candidate.routing.tier,
            created_at=exchange.created_at,
            deadline_at=exchange.created_at + timedelta(seconds=wait),
        )
    elif audit is not None:
        review = Review(
            exchange_id=exchange.id,
            api_key_id=api_key_id,
            tier=audit.tier,
            kind=ReviewKind.AUDIT,
            audit_rate=audit.rate,
            created_at=exchange.created_at,
            deadline_at=exchange.created_at,
        )
    # Plain INSERTs (the ORM's unit of work would cost about as much CPU as the rest of the write, for objects
    # this function only hands back).
    if review is None:  # released: one INSERT, durable when it returns, the cheapest way the database has
        await writer.one(Exchange.__table__, {**row, "response": wire.written(response)})  # type: ignore[attr-defined]
    else:  # held or audited: the exchange, its review and the review's first event, in this order (foreign keys)
        kind = EventKind.HELD if held else EventKind.AUDIT
        event = ReviewEvent(review_id=review.id, kind=kind, at=exchange.created_at, detail={"tier": review.tier})
        rows: list[SQLModel] = [exchange, review, event]
        async with sessions() as session:
            connection = await session.connection()
            for stored in rows:
                await connection.execute(insert(type(stored).__table__), _columns(stored))  # type: ignore[attr-defined]
            await session.commit()
    if held:
        # The request now waits with this exchange in hand. The full body is stored for the heat map; in memory
        # the waiter keeps only what its pending answer needs (no logprobs: about 0.5 MB of Python objects per
        # open request otherwise). Set as the committed value, so it can never be written back by mistake; a
        # deadline release or a decision reads the exchange again from the database.
        slim = {**exchange.response, "choices": [_without_logprobs(c) for c in exchange.response.get("choices", [])]}
        set_committed_value(exchange, "response", slim)
    return exchange, review if held else None


def _columns(row: SQLModel) -> dict[str, Any]:
    """A new row's column values; a key the database numbers (None until inserted) is left to it."""
    table = type(row).__table__  # type: ignore[attr-defined]
    values = {column.key: getattr(row, column.key) for column in table.columns}
    return {name: value for name, value in values.items() if value is not None or not table.c[name].primary_key}


def _without_logprobs(choice: Any) -> Any:
    return {**choice, "logprobs": None} if isinstance(choice, dict) else choice


async def load_review(sessions: Sessions, review_id: str, api_key_id: int) -> tuple[Review, Exchange]:
    """A review and its exchange, visible only to the API key whose request made it."""
    if not wellformed_id(review_id):
        raise NotFound(f"No review with id {review_id!r} for this API key.", param="review_id")
    async with sessions() as session:
        review = await session.get(Review, review_id)
        if review is None or review.api_key_id != api_key_id:
            raise NotFound(f"No review with id {review_id!r} for this API key.", param="review_id")
        exchange = await session.get(Exchange, review.exchange_id)
        assert exchange is not None
    return review, exchange


async def load_own(
    sessions: Sessions, exchange_id: str, api_key_id: int, shown: str | None = None
) -> tuple[Exchange, Review | None]:
    """An exchange and its review, visible only to the API key whose request made it (another key's is not found,
    exactly like one that does not exist); `shown` is the id as the client wrote it, for the error."""
    missing = NotFound(f"No response with id {shown or exchange_id!r} for this API key.")
    if not wellformed_id(exchange_id):
        raise missing
    async with sessions() as session:
        exchange = await session.get(Exchange, exchange_id)
        if exchange is None or exchange.api_key_id != api_key_id:
            raise missing
        review = (await session.exec(select(Review).where(col(Review.exchange_id) == exchange_id))).first()
    return exchange, review


async def cancel(sessions: Sessions, exchange: Exchange, review: Review) -> bool:
    """Cancel a held exchange whose client gave up on it (a background response): its review leaves the queue. One
    conditional UPDATE each, so a decision that lands first wins and the cancel is refused."""
    async with sessions() as session:
        cancelled = await session.exec(
            update(Review)
            .where(col(Review.id) == review.id, col(Review.status) == ReviewStatus.OPEN)
            .values(status=ReviewStatus.CANCELLED)
        )
        if cancelled.rowcount != 1:
            return False
        await session.exec(
            update(Exchange)
            .where(col(Exchange.id) == exchange.id, col(Exchange.status) == ExchangeStatus.HELD)
            .values(status=ExchangeStatus.CANCELLED)
        )
        session.add(ReviewEvent(review_id=review.id, kind=EventKind.CANCELLED))
        await session.commit()
    return True


@dataclass(frozen=True)
class Failure:
    """An upstream call that failed: why, the provider's HTTP status if it answered, and how long it took."""

    kind: str
    upstream_status: int | None
    upstream_ms: float
    sent: str = ""  # what a progressive stream had released to the client before the upstream failed


async def record_failure(
    sessions: Sessions, incoming: Incoming, *, upstream_model: str, policy_version: str, failure: Failure
) -> Exchange:
    """Store a failed exchange, so an operator sees upstream failures beside everything else. No secrets and
    no provider message: only the kind, the status and the latency, and what the client was sent before the
    failure (the text a progressive stream released), so nothing a client received goes unrecorded."""
    exchange = incoming.exchange(
        upstream_model=upstream_model,
        response={},
        signals={},
        policy_version=policy_version,
        calibrator="default",  # nothing was scored
        route=Route.NONE,
        reason=f"upstream failed: {failure.kind}",
        status=ExchangeStatus.FAILED,
        upstream_ms=failure.upstream_ms,
        error_kind=failure.kind,
        upstream_status=failure.upstream_status,
        candidate_text=failure.sent,
        released_chars=len(failure.sent) if failure.sent else None,
    )
    async with sessions() as session:
        session.add(exchange)
        await session.commit()
    return exchange


async def held_review(sessions: Sessions, exchange: Exchange) -> Review | None:
    """The review a held exchange waited on (decided or not); None for an exchange the policy released."""
    if exchange.route != Route.HOLD:
        return None
    async with sessions() as session:
        return (await session.exec(select(Review).where(col(Review.exchange_id) == exchange.id))).first()


async def load(sessions: Sessions, exchange_id: str) -> Exchange:
    async with sessions() as session:
        exchange = await session.get(Exchange, exchange_id)
    if exchange is None:
        raise NotFound(f"No exchange with id {exchange_id!r}.")
    return exchange


async def run_out(sessions: Sessions, exchange: Exchange, review_id: str, outcome: DeadlineOutcome) -> Exchange:
    """Record that a held exchange's wait ran out with `outcome`, and return the exchange as it now stands
    (a decision that landed meanwhile wins). `release` marks the exchange released-on-deadline and turns its
    review into an audit: it stays open, and its decision labels the answer instead of delivering one."""
    release = outcome == DeadlineOutcome.RELEASE
    values: dict[str, Any] = {"deadline_outcome": outcome}
    if release:
        values["status"] = ExchangeStatus.RELEASED_ON_DEADLINE
    async with sessions() as session:
        if release:
            # The review first, guarded as a decision is: only an open hold becomes an audit.
            turned = await session.exec(
                update(Review)
                .where(col(Review.id) == review_id, col(Review.status) == ReviewStatus.OPEN)
                .where(col(Review.kind) == ReviewKind.HOLD)
                .values(kind=ReviewKind.AUDIT)
            )
        if not release or turned.rowcount == 1:
            # The first waiter to run out records the outcome; a decision that landed meanwhile is left alone.
            held = (col(Exchange.id) == exchange.id, col(Exchange.status) == ExchangeStatus.HELD)
            unrecorded = col(Exchange.deadline_outcome).is_(None)
            recorded = await session.exec(update(Exchange).where(*held, unrecorded).values(**values))
            review = await session.get(Review, review_id) if recorded.rowcount == 1 else None
            if review is not None:
                await events.record(session, EventType.DEADLINE_PASSED, review, exchange.id, utcnow(), outcome=outcome)
        await session.commit()
        found = await session.get(Exchange, exchange.id, populate_existing=True)
    assert found is not None
    return found


async def run_out_many(sessions: Sessions, items: list[tuple[str, str, DeadlineOutcome]], now: datetime) -> set[str]:
    """`run_out` for many held exchanges at once, (exchange id, review id, outcome) each, none of them a
    `release`: one transaction records every outcome (a decision that landed meanwhile is left alone) and the
    deadline events; the ids of the exchanges whose outcome was recorded (still held: their waiters know them as
    they stand, so none is read back)."""
    by_outcome: dict[DeadlineOutcome, list[str]] = {}
    for exchange_id, _, outcome in items:
        assert outcome != DeadlineOutcome.RELEASE, "a release turns its review into an audit: run_out, one by one"
        by_outcome.setdefault(outcome, []).append(exchange_id)
    async with sessions() as session:
        recorded: set[str] = set()
        for outcome, chosen in by_outcome.items():
            held = (col(Exchange.id).in_(chosen), col(Exchange.status) == ExchangeStatus.HELD)
            unrecorded = col(Exchange.deadline_outcome).is_(None)
            statement = update(Exchange).where(*held, unrecorded).values(deadline_outcome=outcome)
            recorded |= set((await session.exec(statement.returning(col(Exchange.id)))).scalars().all())
        reviews = [review_id for exchange_id, review_id, _ in items if exchange_id in recorded]
        named = {row.id: row for row in (await session.exec(select(Review).where(col(Review.id).in_(reviews)))).all()}
        # Their API keys read in one query, not one each (a thousand round trips, one after another).
        owners = {review.api_key_id for review in named.values()}
        keys = {key.id: key for key in (await session.exec(select(ApiKey).where(col(ApiKey.id).in_(owners)))).all()}
        for exchange_id, review_id, outcome in items:
            if exchange_id in recorded:
                review = named[review_id]
                passed = EventType.DEADLINE_PASSED
                events.outboxed(session, keys.get(review.api_key_id), passed, review, exchange_id, now, outcome=outcome)
        await session.commit()
    return recorded


async def record_retry(sessions: Sessions, review_id: str, request_id: str, sign: str) -> None:
    """The audit trail notes a client's retry that joined the review instead of making a second one."""
    async with sessions() as session:
        detail = {"request_id": request_id, "sign": sign}
        session.add(ReviewEvent(review_id=review_id, kind=EventKind.RETRIED, detail=detail))
        await session.commit()
