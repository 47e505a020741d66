"""The OpenAI Responses API: `POST /v1/responses` and `GET /v1/responses/{id}`, through the same relay, policy and
review as chat completions; only the words differ (`gateway.conversation.responses`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api import flow
from gateway.conversation import answers, responses
from gateway.conversation import chat as chat_request
from gateway.conversation.chat import ChatRequest
from gateway.conversation.wire import CompletionResponse
from gateway.deps import CurrentKey, RelayDep, RequestId
from gateway.errors import GatewayError, InvalidRequest
from gateway.models import Dialect, ExchangeStatus
from gateway.relay import exchanges
from gateway.relay.replies import Reply
from gateway.relay.service import Relay

router = APIRouter(prefix="/v1")


class Responses:
    """The Responses API's words for a delivered completion: a Response object, or its stream of events."""

    dialect = Dialect.RESPONSES

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request  # echoed in the Response (instructions, tools, text format, metadata, ...)

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        return responses.render(completion, self.request)

    def events(self, completion: dict[str, Any]) -> bytes:
        return responses.events(self.body(completion))

    def error_event(self, error: GatewayError) -> bytes:
        details = error.body()["error"]
        return responses.event("error", 0, {k: details.get(k) for k in ("code", "message", "param")})


async def _earlier(relay: Relay, key_id: int, previous: Any) -> list[dict[str, Any]]:
    """The conversation of `previous_response_id`, its delivered answer included (never a held candidate)."""
    if not isinstance(previous, str):
        raise InvalidRequest("previous_response_id must be a response id.", param="previous_response_id")
    exchange, review = await exchanges.load_own(relay.sessions, responses.exchange_id(previous), key_id)
    chat = ChatRequest.model_validate(exchange.request)
    hitl = answers.hitl_block(exchange, review, None)
    delivered = answers.delivered(exchange, chat, hitl, relay.prompts.get("placeholder").text)
    message = {k: v for k, v in delivered["choices"][0]["message"].items() if v is not None and k != "refusal"}
    return [*exchange.request["messages"], message]


@router.post("/responses")
async def create_response(request: Request, key: CurrentKey, relay: RelayDep, request_id: RequestId) -> Response:
    body = chat_request.load(await request.body())
    assert key.id is not None
    if body.get("background"):
        raise InvalidRequest(
            "Background responses are not served by this gateway yet: leave out `background` and set a wait"
            " (`hitl.wait` or the x-hitl-wait header), then poll GET /v1/responses/{id}.",
            param="background",
        )
    earlier = None
    if body.get("previous_response_id") is not None:
        earlier = await _earlier(relay, key.id, body["previous_response_id"])
    raw = chat_request.with_hitl_headers(responses.to_chat(body, earlier), request.headers)
    return await flow.answer(request, key, relay, request_id, (chat_request.validate(raw), raw), Responses(body))


@router.get("/responses/{response_id}")
async def retrieve_response(response_id: str, request: Request, key: CurrentKey, relay: RelayDep) -> Response:
    """The Response as it stands: `in_progress` (no output) while an agent has not decided, else the answer the
    client gets, in the same words as when it was created."""
    assert key.id is not None
    exchange, review = await exchanges.load_own(relay.sessions, responses.exchange_id(response_id), key.id)
    if exchange.dialect != Dialect.RESPONSES:
        raise InvalidRequest(f"{response_id!r} was not made through the Responses API.", param="response_id")
    chat = ChatRequest.model_validate(exchange.request)
    reply = Reply(relay, chat, exchange.request, review, flow.poll_url(request, review))
    completion = reply.body(exchange)
    rendered = responses.render(completion, {})
    if exchange.status == ExchangeStatus.HELD:
        rendered = responses.in_progress(rendered)
    return CompletionResponse(rendered, headers=answers.hitl_headers(completion["hitl"]))
