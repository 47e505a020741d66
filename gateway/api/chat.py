"""The OpenAI-compatible API: chat completions, models, and the reviews a pending client polls."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.api import flow
from gateway.conversation import answers, wire
from gateway.conversation import chat as chat_request
from gateway.conversation import completion as completions
from gateway.conversation.chat import ChatRequest
from gateway.deps import CurrentKey, RelayDep, RequestId
from gateway.errors import GatewayError, InvalidRequest
from gateway.models import Dialect, ReviewStatus, epoch
from gateway.relay import exchanges
from gateway.relay.replies import Reply

router = APIRouter(prefix="/v1")


class ChatCompletions:
    """Chat Completions' words for a delivered completion: the completion itself, or its chunks."""

    dialect = Dialect.CHAT

    def __init__(self, chat: ChatRequest) -> None:
        self.include_usage = chat.include_usage

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        return completion

    def events(self, completion: dict[str, Any]) -> bytes:
        """The answer's SSE events, chunks then `[DONE]`, in one piece: one write to the client, not one each."""
        return b"".join([*map(wire.event, completions.chunks(completion, self.include_usage)), wire.DONE])

    def error_event(self, error: GatewayError) -> bytes:
        return wire.event(error.body())

    def flowing(self, head: dict[str, Any]) -> ChatFlow:
        return ChatFlow(head, self.include_usage)


class ChatFlow:
    """A progressive stream in Chat Completions' words: the role, each released chunk as a content delta, then
    the rest of the decided answer, its finish reason, usage and `[DONE]`."""

    def __init__(self, head: dict[str, Any], include_usage: bool) -> None:
        self.head = {**head, **({"usage": None} if include_usage else {})}
        self.include_usage = include_usage

    def opening(self) -> bytes:
        return wire.event(completions.chunk_of(self.head, {"role": "assistant", "content": ""}))

    def delta(self, text: str) -> bytes:
        return wire.event(completions.chunk_of(self.head, {"content": text}))

    def closing(self, completion: dict[str, Any], sent: str) -> bytes:
        return b"".join([*map(wire.event, completions.chunks(completion, self.include_usage, sent)), wire.DONE])


@router.post("/chat/completions")
async def create_chat_completion(request: Request, key: CurrentKey, relay: RelayDep, request_id: RequestId) -> Response:
    chat, raw = chat_request.parse(await request.body(), request.headers)
    return await flow.answer(request, key, relay, request_id, (chat, raw), ChatCompletions(chat))


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
    reply = Reply(relay, chat, exchange.request, review, flow.poll_url(request, review))
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
