"""The OpenAI-compatible API: chat completions, models, and the reviews a pending client polls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.conversation import answers, wire
from gateway.conversation import chat as chat_request
from gateway.conversation.chat import ChatRequest
from gateway.conversation.wire import CompletionResponse
from gateway.deps import CurrentKey, RelayDep, RequestId
from gateway.errors import GatewayError, InvalidRequest
from gateway.models import Exchange, ExchangeStatus, Review, ReviewStatus, epoch
from gateway.relay import exchanges, retries
from gateway.relay.replies import Reply

router = APIRouter(prefix="/v1")
# The status a streamed answer's headers carry when they leave before the upstream has answered; the chunks' `hitl`
# block says what became of it.
GENERATING = "generating"


def _poll_url(request: Request, review: Review | None) -> str | None:
    return str(request.url_for("get_review", review_id=review.id)) if review else None


@router.post("/chat/completions")
async def create_chat_completion(request: Request, key: CurrentKey, relay: RelayDep, request_id: RequestId) -> Response:
    chat, raw = chat_request.parse(await request.body())
    assert key.id is not None
    identity = retries.identify(request.headers, key.id, raw)
    upstream = relay.upstreams.get(chat.model)
    wait = relay.wait_seconds(chat)

    def reply(review: Review | None) -> Reply:
        return Reply(relay, chat, raw, review, _poll_url(request, review))

    repeated = await relay.repeated(identity)
    if repeated is not None:
        review = await exchanges.held_review(relay.sessions, repeated)
        if review is not None and identity.sign is not None:
            relay.later(exchanges.record_retry(relay.sessions, review.id, request_id, identity.sign))
        response = await _respond(reply(review), repeated, wait)
        response.headers[retries.REPLAYED] = "true"
        return response

    incoming = exchanges.Incoming(request_id, key.id, chat, raw, identity.fingerprint, identity.key)
    if not chat.stream:
        exchange, review = await relay.proposed(identity, incoming, upstream, wait)
        return await _respond(reply(review), exchange, wait)
    # A streamed answer waits for the upstream like any other (it is scored whole), but a client should not sit
    # on a silent connection meanwhile: past one keep-alive interval the 200 goes out and comments follow, so a
    # proxy with an idle timeout in between does not cut a long generation. The task is shielded: a client that
    # hangs up does not cancel the upstream call or the stored exchange.
    proposal = asyncio.ensure_future(relay.proposed(identity, incoming, upstream, wait))
    await asyncio.wait({proposal}, timeout=relay.settings.hold.keepalive)
    if proposal.done():
        exchange, review = proposal.result()
        return await _respond(reply(review), exchange, wait)
    relay.outlive_client(proposal)

    async def generating() -> AsyncIterator[ServerSentEvent | bytes]:
        yield ServerSentEvent(comment=GENERATING)
        try:
            exchange, review = await asyncio.shield(proposal)
        except GatewayError as exc:
            yield wire.event(exc.body())
            return
        async for event in _events(reply(review), exchange, wait):
            yield event

    headers = {"x-hitl-status": GENERATING}
    return EventSourceResponse(generating(), ping=relay.settings.hold.keepalive, headers=headers)


async def _respond(reply: Reply, exchange: Exchange, wait: float) -> Response:
    """The answer as the exchange stands: at once when it needs no agent (released, or decided already),
    else after waiting for a decision up to `wait` seconds, as JSON or as SSE."""
    keepalive = reply.relay.settings.hold.keepalive
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


async def _events(reply: Reply, exchange: Exchange, wait: float) -> AsyncIterator[bytes]:
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
    relay: RelayDep,
    wait: float = Query(0.0, ge=0, description="Seconds to wait for a decision (long poll)."),
) -> dict[str, Any]:
    assert key.id is not None
    review, exchange = await exchanges.load_review(relay.sessions, review_id, key.id)
    if wait > relay.settings.hold.max_wait:
        raise InvalidRequest(f"wait may be at most {relay.settings.hold.max_wait:g} seconds.", param="wait")
    chat = ChatRequest.model_validate(exchange.request)
    reply = Reply(relay, chat, exchange.request, review, _poll_url(request, review))
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
async def list_models(key: CurrentKey, relay: RelayDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(name) for name in relay.upstreams.names()]}


@router.get("/models/{model:path}")
async def retrieve_model(model: str, key: CurrentKey, relay: RelayDep) -> dict[str, Any]:
    relay.upstreams.get(model)
    return _model_card(model)
