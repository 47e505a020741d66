"""The OpenAI-compatible API: chat completions, models, and the reviews a pending client polls."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.conversation import answers, completion, toolcalls, wire
from gateway.conversation import chat as chat_request
from gateway.conversation.chat import ChatRequest
from gateway.conversation.upstream import Upstream
from gateway.conversation.wire import CompletionResponse
from gateway.deps import CurrentKey, RequestId, RuntimeDep
from gateway.errors import GatewayError, InvalidRequest, ReviewPending
from gateway.models import DeadlineOutcome, Exchange, ExchangeStatus, Review, ReviewStatus, epoch
from gateway.relay import exchanges, retries
from gateway.runtime import Runtime

router = APIRouter(prefix="/v1")
log = logging.getLogger("hitl.api")
# The status a streamed answer's headers carry when they leave before the upstream has answered; the chunks' `hitl`
# block says what became of it.
GENERATING = "generating"


def _wait_seconds(runtime: Runtime, chat: ChatRequest) -> float:
    hold = runtime.settings.hold
    asked = chat.hitl.wait if chat.hitl and chat.hitl.wait is not None else None
    if asked is None:
        return min(hold.default_wait, hold.max_wait)
    if asked > hold.max_wait:
        raise InvalidRequest(f"hitl.wait may be at most {hold.max_wait:g} seconds.", param="hitl.wait")
    return asked


def _poll_url(request: Request, review: Review | None) -> str | None:
    return str(request.url_for("get_review", review_id=review.id)) if review else None


class _Reply:
    """What one request answers with as the exchange stands, as a body or as SSE events."""

    def __init__(
        self, runtime: Runtime, request: Request, chat: ChatRequest, raw: dict[str, Any], review: Review | None
    ) -> None:
        self.runtime = runtime
        self.request = request
        self.chat = chat
        self.raw = raw
        self.review = review
        self.outcome: DeadlineOutcome | None = None  # set when the wait ran out

    def body(self, exchange: Exchange) -> dict[str, Any]:
        hitl = answers.hitl_block(exchange, self.review, _poll_url(self.request, self.review))
        placeholder = self.runtime.prompts.get("placeholder").text
        outcome = self.outcome or DeadlineOutcome.PLACEHOLDER
        return answers.delivered(exchange, self.chat, hitl, placeholder, outcome)

    async def final(self, exchange_id: str, wait: float) -> dict[str, Any]:
        """What the waiting client gets: the decision, or when the wait runs out the tier's `on_deadline`
        outcome (placeholder, refusal, the candidate, or `ReviewPending` raised as an error)."""
        assert self.review is not None
        exchange = await self.wait_and_load(exchange_id, wait)
        if exchange.status == ExchangeStatus.HELD:
            self.outcome = self.runtime.policy.on_deadline(self.review.tier, self.raw)
            exchange = await exchanges.run_out(self.runtime.sessions, exchange, self.review.id, self.outcome)
            if exchange.status not in (ExchangeStatus.HELD, ExchangeStatus.RELEASED_ON_DEADLINE):
                self.outcome = None  # a decision landed between the timeout and now: the client gets it
            if exchange.status == ExchangeStatus.HELD and self.outcome == DeadlineOutcome.ERROR:
                self.record_delivery(answers.HitlStatus.PENDING)
                poll_url = str(_poll_url(self.request, self.review))
                hitl = answers.hitl_block(exchange, self.review, poll_url)
                raise ReviewPending(self.review.id, poll_url, answers.hitl_headers(hitl))
        body = self.body(exchange)
        self.record_delivery(body["hitl"]["status"])
        return body

    def events(self, body: dict[str, Any]) -> bytes:
        """The answer's SSE events, chunks then `[DONE]`, in one piece: one write to the client, not one each."""
        return b"".join([*map(wire.event, completion.chunks(body, self.chat.include_usage)), wire.DONE])

    async def wait_and_load(self, exchange_id: str, wait: float) -> Exchange:
        assert self.review is not None
        decided = (await self.runtime.holds.wait(self.review.id, wait)).exchange
        if decided is not None and decided.id == exchange_id:
            return decided  # decided in this process: the decision handed over the exchange it wrote
        return await exchanges.load(self.runtime.sessions, exchange_id)

    def record_delivery(self, status: str) -> None:
        """Write what the waiting client got to the review's audit trail, off the request path: the
        write must not stand between a decision and the client."""
        assert self.review is not None
        delivery = exchanges.record_delivery(self.runtime.sessions, self.review.id, status, self.outcome)
        self.runtime.later(delivery)


@router.post("/chat/completions")
async def create_chat_completion(
    request: Request, key: CurrentKey, runtime: RuntimeDep, request_id: RequestId
) -> Response:
    chat, raw = chat_request.parse(await request.body())
    assert key.id is not None
    identity = retries.identify(request.headers, key.id, raw)
    upstream = runtime.upstreams.get(chat.model)
    wait = _wait_seconds(runtime, chat)

    repeated = await _repeated(runtime, identity)
    if repeated is not None:
        review = await exchanges.held_review(runtime.sessions, repeated)
        if review is not None and identity.sign is not None:
            runtime.later(exchanges.record_retry(runtime.sessions, review.id, request_id, identity.sign))
        response = await _respond(_Reply(runtime, request, chat, raw, review), repeated, wait)
        response.headers[retries.REPLAYED] = "true"
        return response

    incoming = exchanges.Incoming(request_id, key.id, chat, raw, identity.fingerprint, identity.key)

    async def proposed() -> tuple[Exchange, Review | None]:
        async with runtime.in_flight.taking(identity) as taken:
            exchange, review = await _propose(runtime, incoming, upstream, wait)
            taken.set_result(exchange.id)
        return exchange, review

    if not chat.stream:
        exchange, review = await proposed()
        return await _respond(_Reply(runtime, request, chat, raw, review), exchange, wait)
    # A streamed answer waits for the upstream like any other (it is scored whole), but a client should not sit
    # on a silent connection meanwhile: past one keep-alive interval the 200 goes out and comments follow, so a
    # proxy with an idle timeout in between does not cut a long generation. The task is shielded: a client that
    # hangs up does not cancel the upstream call or the stored exchange.
    proposal = asyncio.ensure_future(proposed())
    await asyncio.wait({proposal}, timeout=runtime.settings.hold.keepalive)
    if proposal.done():
        exchange, review = proposal.result()
        return await _respond(_Reply(runtime, request, chat, raw, review), exchange, wait)
    runtime.outlive_client(proposal)

    async def generating() -> AsyncIterator[ServerSentEvent | bytes]:
        yield ServerSentEvent(comment=GENERATING)
        try:
            exchange, review = await asyncio.shield(proposal)
        except GatewayError as exc:
            yield wire.event(exc.body())
            return
        async for event in _events(_Reply(runtime, request, chat, raw, review), exchange, wait):
            yield event

    headers = {"x-hitl-status": GENERATING}
    return EventSourceResponse(generating(), ping=runtime.settings.hold.keepalive, headers=headers)


async def _propose(
    runtime: Runtime, incoming: exchanges.Incoming, upstream: Upstream, wait: float
) -> tuple[Exchange, Review | None]:
    """Ask the upstream, score the candidate, route it by policy and store the exchange (and its review when
    held) before the client hears anything. A failed upstream call is stored too, then raised as it was."""
    chat, raw = incoming.chat, incoming.raw
    started = time.perf_counter()
    asked = chat_request.upstream_body(raw, chat, upstream.logprobs)
    try:
        response = await upstream.complete(asked)
    except GatewayError as exc:
        failure = exchanges.Failure(exc.failure or "upstream_error", exc.upstream_status, _since(started))
        await _record_failure(runtime, incoming, upstream, failure)
        raise  # the client gets the same OpenAI-shaped error as before
    upstream_ms = _since(started)
    score = await runtime.scorer.score(upstream, chat.model, asked, response, answers.candidate_text(response))
    calls = toolcalls.found(response)
    if any(call.malformed for call in calls):
        score.signals["missing"] = sorted({*score.signals["missing"], toolcalls.MALFORMED})
    routing = runtime.policy.route(score.confidence, raw, score.signals["missing"], calls)
    candidate = exchanges.Candidate(response=response, score=score, routing=routing, upstream_ms=upstream_ms)
    audit = runtime.settings.audit
    return await exchanges.record(
        runtime.inserts,
        runtime.sessions,
        incoming,
        upstream_model=upstream.model,
        candidate=candidate,
        policy_version=runtime.policy.version,
        calibrator=runtime.scorer.calibrator_version,
        wait=wait,
        audit=exchanges.Audit(audit.tier, audit.rate) if random.random() < audit.rate else None,
    )


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def _record_failure(
    runtime: Runtime, incoming: exchanges.Incoming, upstream: Upstream, failure: exchanges.Failure
) -> None:
    """A failed upstream call leaves a `failed` exchange and one structured log line, with the request id."""
    exchange = await exchanges.record_failure(
        runtime.sessions,
        incoming,
        upstream_model=upstream.model,
        policy_version=runtime.policy.version,
        failure=failure,
    )
    log.warning(
        "upstream_failed request_id=%s exchange_id=%s upstream=%s kind=%s status=%s latency_ms=%.0f",
        incoming.request_id,
        exchange.id,
        upstream.name,
        failure.kind,
        failure.upstream_status if failure.upstream_status is not None else "-",
        failure.upstream_ms,
    )


async def _repeated(runtime: Runtime, identity: retries.Identity) -> Exchange | None:
    """The exchange this request repeats (a retry, or the same Idempotency-Key), if it is one."""
    window = runtime.settings.idempotency_window
    if identity.sign is None or window <= 0:
        return None
    joined = await runtime.in_flight.joined(identity)
    if joined is not None:
        return retries.same_body(identity, await exchanges.load(runtime.sessions, joined))
    since = runtime.clock.now() - timedelta(seconds=window)
    async with runtime.sessions() as session:
        return await retries.stored(session, identity, since)


async def _respond(reply: _Reply, exchange: Exchange, wait: float) -> Response:
    """The answer as the exchange stands: at once when it needs no agent (released, or decided already),
    else after waiting for a decision up to `wait` seconds, as JSON or as SSE."""
    keepalive = reply.runtime.settings.hold.keepalive
    if reply.review is None or exchange.status != ExchangeStatus.HELD:
        body = reply.body(exchange)
        headers = answers.hitl_headers(body["hitl"])
        if reply.chat.stream:
            return EventSourceResponse(_at_once(reply.events(body)), ping=keepalive, headers=headers)
        return CompletionResponse(body, headers=headers)

    if not reply.chat.stream:
        body = await reply.final(exchange.id, wait)
        return CompletionResponse(body, headers=answers.hitl_headers(body["hitl"]))

    # The headers leave with the 200, before any decision: they say the answer is held, and where to poll.
    pending = answers.hitl_headers(reply.body(exchange)["hitl"])
    return EventSourceResponse(_events(reply, exchange, wait), ping=keepalive, headers=pending)


async def _at_once(events: bytes) -> AsyncIterator[bytes]:
    """Events ready now, from an async generator: a plain iterator would be read in a worker thread."""
    yield events


async def _events(reply: _Reply, exchange: Exchange, wait: float) -> AsyncIterator[bytes]:
    """The SSE events of an answer whose 200 is already out: at once when it needs no agent, else after the
    wait. A failure from here on can only travel as an SSE error event."""
    if reply.review is None or exchange.status != ExchangeStatus.HELD:
        body = reply.body(exchange)
    else:
        try:
            body = await reply.final(exchange.id, wait)
        except GatewayError as exc:
            yield wire.event(exc.body())
            return
    yield reply.events(body)


@router.get("/reviews/{review_id}", name="get_review")
async def get_review(
    review_id: str,
    request: Request,
    key: CurrentKey,
    runtime: RuntimeDep,
    wait: float = Query(0.0, ge=0, description="Seconds to wait for a decision (long poll)."),
) -> dict[str, Any]:
    assert key.id is not None
    review, exchange = await exchanges.load_review(runtime.sessions, review_id, key.id)
    if wait > runtime.settings.hold.max_wait:
        raise InvalidRequest(f"wait may be at most {runtime.settings.hold.max_wait:g} seconds.", param="wait")
    chat = ChatRequest.model_validate(exchange.request)
    reply = _Reply(runtime, request, chat, exchange.request, review)
    if review.status == ReviewStatus.OPEN and wait > 0:
        exchange = await reply.wait_and_load(exchange.id, wait)
    body = reply.body(exchange)
    decided = answers.hitl_status(exchange) != answers.HitlStatus.PENDING
    return {
        "id": review.id,
        "object": "hitl.review",
        "status": body["hitl"]["status"],
        "tier": review.tier,
        "exchange_id": exchange.id,
        "created": epoch(review.created_at),
        "decided": epoch(exchange.decided_at) if decided and exchange.decided_at else None,
        "completion": body if decided else None,
    }


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "hitl-gateway"}


@router.get("/models")
async def list_models(key: CurrentKey, runtime: RuntimeDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(name) for name in runtime.upstreams.names()]}


@router.get("/models/{model:path}")
async def retrieve_model(model: str, key: CurrentKey, runtime: RuntimeDep) -> dict[str, Any]:
    runtime.upstreams.get(model)
    return _model_card(model)
