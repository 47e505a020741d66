"""The OpenAI Responses API: `POST /v1/responses` and `GET /v1/responses/{id}`, through the same relay, policy and
review as chat completions; only the words differ (`gateway.conversation.responses`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from gateway.api import flow
from gateway.conversation import answers, responses
from gateway.conversation import chat as chat_request
from gateway.conversation.chat import ChatRequest
from gateway.conversation.wire import CompletionResponse
from gateway.deps import CurrentKey, RelayDep, RequestId
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.models import Dialect, Exchange, ExchangeStatus, Review, id_time, timed_id
from gateway.relay import exchanges, retries
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

    def flowing(self, head: dict[str, Any]) -> flow.Flow | None:
        return ResponseFlow(head, self.request)


class ResponseFlow:
    """A progressive stream in the Responses API's words: the Response created and in progress, its message item
    and text part opened at once, each released chunk as an `output_text.delta`, then the rest of the decided
    answer and every `.done` event, each event numbered in order."""

    def __init__(self, head: dict[str, Any], request: dict[str, Any]) -> None:
        self.request = request  # echoed in the Response, as when it is not streamed
        self.response = responses.render({**head, "choices": [{"message": {"content": ""}}]}, request)
        self.number = 0

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        self.number += 1
        return responses.event(kind, self.number - 1, data)

    def opening(self) -> bytes:
        started = responses.in_progress(self.response)
        (item,) = self.response["output"]
        where = {"item_id": item["id"], "output_index": 0}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return b"".join(
            [
                self._event("response.created", {"response": started}),
                self._event("response.in_progress", {"response": started}),
                self._event("response.output_item.added", {"output_index": 0, "item": {**item, "content": [],
                                                                                       "status": "in_progress"}}),
                self._event("response.content_part.added", {**where, "content_index": 0, "part": part}),
            ]
        )  # fmt: skip

    def delta(self, text: str) -> bytes:
        item_id = self.response["output"][0]["id"]
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        return self._event("response.output_text.delta", {**where, "delta": text, "logprobs": []})

    def closing(self, completion: dict[str, Any], sent: str) -> bytes:
        rendered = responses.render(completion, self.request)
        out = [self._event(kind, data) for kind, data in responses.rest_of(rendered, sent)]
        return b"".join(out)


async def _earlier(relay: Relay, key_id: int, previous: Any) -> list[dict[str, Any]]:
    """The conversation of `previous_response_id`, its delivered answer included (never a held candidate)."""
    if not isinstance(previous, str):
        raise InvalidRequest("previous_response_id must be a response id.", param="previous_response_id")
    exchange, review = await exchanges.load_own(relay.sessions, responses.exchange_id(previous), key_id, previous)
    chat = ChatRequest.model_validate(exchange.request)
    hitl = answers.hitl_block(exchange, review, None)
    delivered = answers.delivered(exchange, chat, hitl, relay.prompts.get("placeholder").text)
    message = {k: v for k, v in delivered["choices"][0]["message"].items() if v is not None and k != "refusal"}
    return [*exchange.request["messages"], message]


@router.post("/responses")
async def create_response(request: Request, key: CurrentKey, relay: RelayDep, request_id: RequestId) -> Response:
    body = chat_request.load(await request.body())
    assert key.id is not None
    earlier = None
    if body.get("previous_response_id") is not None:
        earlier = await _earlier(relay, key.id, body["previous_response_id"])
    raw = chat_request.with_hitl_headers(responses.to_chat(body, earlier), request.headers)
    chat = chat_request.validate(raw)
    if not body.get("background"):
        return await flow.answer(request, key, relay, request_id, (chat, raw), Responses(body))
    identity = retries.identify(request.headers, key.id, raw)
    repeated = await relay.repeated(identity)
    if repeated is None:
        return await _queued(request, identity, relay, request_id, (chat, raw), body)
    # A retried create (the same Idempotency-Key, or the SDK's retry of the same body) gets the response it made,
    # as it stands: no second upstream call, no second review.
    made = responses.response_id(repeated.id)
    if body.get("stream"):
        replayed = await _resumed(made, request, key.id, relay, -1)
    else:
        exchange, review = await exchanges.load_own(relay.sessions, repeated.id, key.id)
        replayed = _as_it_stands(made, exchange, review, request, relay)
    replayed.headers[retries.REPLAYED] = "true"
    return replayed


async def _queued(
    request: Request,
    identity: retries.Identity,
    relay: Relay,
    request_id: str,
    parsed: tuple[ChatRequest, dict[str, Any]],
    body: dict[str, Any],
) -> Response:
    """Background mode is the hold without a deadline: `queued` at once; the answer is asked, scored and routed
    meanwhile, and a held one stays `in_progress` until an agent decides, however long that takes. Nobody waits,
    so there is no placeholder. Streamed, the `queued` Response is the first event and the rest follow the
    answer (after the decision when it is held); a client that drops the stream resumes it with
    GET /v1/responses/{id}?stream=true&starting_after=N."""
    chat, raw = parsed
    upstream = relay.upstreams.get(chat.model)
    key_id = identity.api_key_id
    created = time.time()
    named = timed_id("chatcmpl", created)
    incoming = exchanges.Incoming(
        request_id, key_id, chat, raw, identity.fingerprint, identity.key, Dialect.RESPONSES, named
    )
    # Standing in flight under its identity, so a retry that arrives before it is stored joins it.
    asked = asyncio.ensure_future(relay.proposed(identity, incoming, upstream, wait=0))
    relay.outlive_client(asked)
    queued = responses.unanswered(responses.response_id(named), body, "queued", created)
    headers = {"x-hitl-status": "queued", "x-hitl-exchange-id": named}
    if not body.get("stream"):
        return CompletionResponse(queued, headers=headers)

    async def events() -> AsyncIterator[bytes]:
        yield responses.event("response.created", 0, {"response": queued})
        try:
            await asyncio.shield(asked)  # stored (asked, scored, routed), whether this stream stays or not
        except GatewayError:
            pass  # a failed upstream call is stored as a failed Response
        try:
            exchange, review = await exchanges.load_own(relay.sessions, named, key_id)
        except NotFound:  # refused before anything was stored
            error = {"code": "server_error", "message": "The request could not be answered.", "param": None}
            yield responses.event("error", 1, error)
            return
        reply = Reply(relay, chat, exchange.request, review, flow.poll_url(request, review))
        async for chunk in _after_decision(reply, exchange, review, relay, start=1):
            yield chunk

    return EventSourceResponse(events(), ping=relay.settings.hold.keepalive, headers=headers)


def _young(relay: Relay, exchange_id: str) -> bool:
    """Whether a background response of this id may still be on its way to being stored (asked and scored, on this
    replica or another): then it is `in_progress`, not unknown."""
    made = id_time(exchange_id)
    longest = max((upstream.timeout for upstream in relay.settings.upstreams), default=60.0)
    return made is not None and 0 <= time.time() - made < 2 * longest + 30


@router.get("/responses/{response_id}")
async def retrieve_response(
    response_id: str,
    request: Request,
    key: CurrentKey,
    relay: RelayDep,
    stream: bool = Query(False, description="Replay the Response's events (waiting for a decision while held)."),
    starting_after: int = Query(-1, ge=-1, description="Resume a stream after this sequence number."),
) -> Response:
    """The Response as it stands: `in_progress` (no output) while it is asked or while an agent has not decided,
    then the answer the client gets, in the same words as when it was created; `failed` or `cancelled` when so.
    With `stream=true`, its events from `starting_after` on, after the decision when it is held."""
    assert key.id is not None
    if stream:
        return await _resumed(response_id, request, key.id, relay, starting_after)
    named = responses.exchange_id(response_id)
    try:
        exchange, review = await exchanges.load_own(relay.sessions, named, key.id, response_id)
    except NotFound:
        if not _young(relay, named):
            raise
        made = id_time(named) or time.time()
        return CompletionResponse(responses.unanswered(response_id, {}, "in_progress", made))
    return _as_it_stands(response_id, exchange, review, request, relay)


def _as_it_stands(
    response_id: str, exchange: Exchange, review: Review | None, request: Request, relay: Relay
) -> Response:
    """The stored Response: the answer the client gets, `in_progress` while held, `failed` or `cancelled`."""
    if exchange.dialect != Dialect.RESPONSES:
        raise InvalidRequest(f"{response_id!r} was not made through the Responses API.", param="response_id")
    chat = ChatRequest.model_validate(exchange.request)
    reply = Reply(relay, chat, exchange.request, review, flow.poll_url(request, review))
    completion = reply.body(exchange)
    headers = answers.hitl_headers(completion["hitl"])
    created = exchange.created_at.timestamp()
    if exchange.status == ExchangeStatus.FAILED:
        failed = responses.unanswered(response_id, exchange.request, "failed", created)
        error = {"code": "server_error", "message": f"The upstream failed ({exchange.error_kind})."}
        return CompletionResponse({**failed, "error": error}, headers=headers)
    if exchange.status == ExchangeStatus.CANCELLED:
        return CompletionResponse(
            responses.unanswered(response_id, exchange.request, "cancelled", created), headers=headers
        )
    rendered = responses.render(completion, {})
    if exchange.status == ExchangeStatus.HELD:
        rendered = responses.in_progress(rendered)
    return CompletionResponse(rendered, headers=headers)


async def _resumed(response_id: str, request: Request, key_id: int, relay: Relay, starting_after: int) -> Response:
    """A Response's stream, resumed: the events after `starting_after`; a held one's after its decision (keep-alive
    comments meanwhile, up to the longest wait), or, when nobody decides by then, only its `in_progress` events."""
    exchange, review = await exchanges.load_own(relay.sessions, responses.exchange_id(response_id), key_id, response_id)
    chat = ChatRequest.model_validate(exchange.request)
    reply = Reply(relay, chat, exchange.request, review, flow.poll_url(request, review))
    headers = answers.hitl_headers(reply.body(exchange)["hitl"])

    events = _after_decision(reply, exchange, review, relay, start=starting_after + 1)
    return EventSourceResponse(events, ping=relay.settings.hold.keepalive, headers=headers)


async def _after_decision(
    reply: Reply, exchange: Exchange, review: Review | None, relay: Relay, start: int
) -> AsyncIterator[bytes]:
    """A Response's events from `start` on: a held one's after its decision (up to the longest wait; when nobody
    decides by then, only its `in_progress` events), a failed one's `response.failed`."""
    current = exchange
    if current.status == ExchangeStatus.HELD and review is not None:
        current = await reply.wait_and_load(current.id, relay.settings.hold.max_wait)
    response_id = responses.response_id(current.id)
    if current.status in (ExchangeStatus.FAILED, ExchangeStatus.CANCELLED):
        kind = "failed" if current.status == ExchangeStatus.FAILED else "cancelled"
        ended = responses.unanswered(response_id, current.request, kind, current.created_at.timestamp())
        if current.status == ExchangeStatus.FAILED:
            ended["error"] = {"code": "server_error", "message": f"The upstream failed ({current.error_kind})."}
        yield responses.event(f"response.{kind}", max(start, 1), {"response": ended})
        return
    rendered = responses.render(reply.body(current), {})
    if current.status == ExchangeStatus.HELD:
        rendered = responses.in_progress(rendered)
        yield responses.events(rendered, start=start, until="response.in_progress")
        return
    yield responses.events(rendered, start=start)


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, key: CurrentKey, relay: RelayDep) -> Response:
    """Cancel a background response an agent has not decided yet: its review leaves the queue. One already
    answered cannot be cancelled (400), as with OpenAI; one still being asked is cancelled once it is stored."""
    assert key.id is not None
    exchange, review = await exchanges.load_own(relay.sessions, responses.exchange_id(response_id), key.id, response_id)
    created = exchange.created_at.timestamp()
    if exchange.status == ExchangeStatus.CANCELLED:
        return CompletionResponse(responses.unanswered(response_id, exchange.request, "cancelled", created))
    if (
        exchange.status != ExchangeStatus.HELD
        or review is None
        or not await exchanges.cancel(relay.sessions, exchange, review)
    ):
        raise InvalidRequest("Only a response still waiting for review can be cancelled.", param="response_id")
    return CompletionResponse(responses.unanswered(response_id, exchange.request, "cancelled", created))
