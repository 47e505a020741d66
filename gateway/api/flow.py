"""How every dialect answers a request, once it is parsed into the conversation: through the relay (propose, or
join the exchange a retry repeats), then at once when no agent is needed, else after the wait, as one JSON body
or as SSE events. A dialect only says how a delivered completion reads in its own words (`Rendering`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.conversation import answers
from gateway.conversation.chat import ChatRequest
from gateway.conversation.upstream import Upstream
from gateway.conversation.wire import CompletionResponse
from gateway.errors import GatewayError
from gateway.models import ApiKey, Dialect, Exchange, ExchangeStatus, Review, timed_id
from gateway.operations import tracing
from gateway.relay import exchanges, retries
from gateway.relay.replies import Reply
from gateway.relay.service import Relay

# The status a streamed answer's headers carry when they leave before the upstream has answered; the events say
# what became of it.
GENERATING = "generating"
# The status of a progressive stream's headers: its chunks go out as they clear, the last event says the rest.
PROGRESSIVE = "progressive"


class Flow(Protocol):
    """A dialect's words for a progressive stream: its opening, each released chunk, then the rest of the decided
    answer after what was `sent`."""

    def opening(self) -> bytes: ...

    def delta(self, text: str) -> bytes: ...

    def closing(self, completion: dict[str, Any], sent: str) -> bytes: ...


class Rendering(Protocol):
    """A dialect's words for what the gateway delivers (a chat completion with its `hitl` block)."""

    dialect: Dialect

    def body(self, completion: dict[str, Any]) -> dict[str, Any]: ...

    def events(self, completion: dict[str, Any]) -> bytes: ...

    def error_event(self, error: GatewayError) -> bytes: ...

    def flowing(self, head: dict[str, Any]) -> Flow | None:
        """Its words for a progressive stream (`head`: the answer's id, created and model); None: buffered."""
        ...


def poll_url(request: Request, review: Review | None) -> str | None:
    return str(request.url_for("get_review", review_id=review.id)) if review else None


async def answer(
    request: Request,
    key: ApiKey,
    relay: Relay,
    request_id: str,
    parsed: tuple[ChatRequest, dict[str, Any]],
    rendering: Rendering,
) -> Response:
    """The request's answer, in its dialect, within the request's span (the upstream call and scoring are its
    children; a held stream's wait goes on after the response has begun, in a span of its own)."""
    with tracing.request(parsed[0].model, str(rendering.dialect)):
        return await _answer(request, key, relay, request_id, parsed, rendering)


async def _answer(
    request: Request,
    key: ApiKey,
    relay: Relay,
    request_id: str,
    parsed: tuple[ChatRequest, dict[str, Any]],
    rendering: Rendering,
) -> Response:
    chat, raw = parsed
    assert key.id is not None
    identity = retries.identify(request.headers, key.id, raw)
    upstream = relay.upstreams.get(chat.model)
    wait = relay.wait_seconds(chat)

    def reply(review: Review | None) -> Reply:
        return Reply(relay, chat, raw, review, poll_url(request, review))

    repeated = await relay.repeated(identity)
    if repeated is not None:
        review = await exchanges.held_review(relay.sessions, repeated)
        if review is not None and identity.sign is not None:
            relay.later(exchanges.record_retry(relay.sessions, review.id, request_id, identity.sign))
        response = await respond(reply(review), repeated, wait, rendering)
        response.headers[retries.REPLAYED] = "true"
        return response

    if chat.stream and upstream.streams and relay.policy.progressive(raw):
        now = time.time()
        named = timed_id("chatcmpl", now)
        flow = rendering.flowing({"id": named, "created": int(now), "model": chat.model})
        if flow is not None:
            incoming = exchanges.Incoming(
                request_id, key.id, chat, raw, identity.fingerprint, identity.key, rendering.dialect, named
            )
            events = _progressive(relay, identity, incoming, upstream, wait, reply, rendering, flow)
            headers = {"x-hitl-status": PROGRESSIVE, "x-hitl-exchange-id": named}
            return EventSourceResponse(events, ping=relay.settings.hold.keepalive, headers=headers)
    incoming = exchanges.Incoming(
        request_id, key.id, chat, raw, identity.fingerprint, identity.key, dialect=rendering.dialect
    )
    if not chat.stream:
        exchange, review = await relay.proposed(identity, incoming, upstream, wait)
        return await respond(reply(review), exchange, wait, rendering)
    # A streamed answer waits for the upstream like any other (it is scored whole), but a client should not sit
    # on a silent connection meanwhile: past one keep-alive interval the 200 goes out and comments follow, so a
    # proxy with an idle timeout in between does not cut a long generation. The task is shielded: a client that
    # hangs up does not cancel the upstream call or the stored exchange.
    proposal = asyncio.ensure_future(relay.proposed(identity, incoming, upstream, wait))
    await asyncio.wait({proposal}, timeout=relay.settings.hold.keepalive)
    if proposal.done():
        exchange, review = proposal.result()
        return await respond(reply(review), exchange, wait, rendering)
    relay.outlive_client(proposal)

    async def generating() -> AsyncIterator[ServerSentEvent | bytes]:
        yield ServerSentEvent(comment=GENERATING)
        try:
            exchange, review = await asyncio.shield(proposal)
        except GatewayError as exc:
            yield rendering.error_event(exc)
            return
        async for event in _events(reply(review), exchange, wait, rendering):
            yield event

    headers = {"x-hitl-status": GENERATING}
    return EventSourceResponse(generating(), ping=relay.settings.hold.keepalive, headers=headers)


async def _progressive(
    relay: Relay,
    identity: retries.Identity,
    incoming: exchanges.Incoming,
    upstream: Upstream,
    wait: float,
    reply: Callable[[Review | None], Reply],
    rendering: Rendering,
    flow: Flow,
) -> AsyncIterator[bytes]:
    """A progressive stream: each chunk the relay releases as it arrives, then the rest of the answer as decided
    (at once when it needs no agent, else after the wait). The proposal outlives a client that hangs up."""
    released: asyncio.Queue[str] = asyncio.Queue()
    asked = relay.propose_progressively(identity, incoming, upstream, wait, released.put_nowait)
    proposal = asyncio.ensure_future(asked)
    relay.outlive_client(proposal)
    sent: list[str] = []
    yield flow.opening()
    while not proposal.done() or not released.empty():
        taken = asyncio.ensure_future(released.get())
        try:
            await asyncio.wait({taken, proposal}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the client left: nothing more to take
            taken.cancel()
            raise
        if not taken.done():
            taken.cancel()  # the answer is in, and every chunk released before it was taken
            continue
        sent.append(taken.result())
        yield flow.delta(sent[-1])
    try:
        exchange, review = proposal.result()
        body = await _decided(reply(review), exchange, wait)
    except GatewayError as exc:
        yield rendering.error_event(exc)
        return
    yield flow.closing(body, "".join(sent))


async def _decided(reply: Reply, exchange: Exchange, wait: float) -> dict[str, Any]:
    """The answer a client whose 200 is out gets: at once when it needs no agent, else after the wait."""
    if reply.review is None or exchange.status != ExchangeStatus.HELD:
        return reply.body(exchange)
    return await reply.final(exchange, wait)


async def respond(reply: Reply, exchange: Exchange, wait: float, rendering: Rendering) -> Response:
    """The answer as the exchange stands: at once when it needs no agent (released, or decided already),
    else after waiting for a decision up to `wait` seconds, as JSON or as SSE."""
    keepalive = reply.relay.settings.hold.keepalive
    if reply.review is None or exchange.status != ExchangeStatus.HELD:
        body = reply.body(exchange)
        headers = answers.hitl_headers(body["hitl"])
        if reply.chat.stream:
            return EventSourceResponse(_at_once(rendering.events(body)), ping=keepalive, headers=headers)
        return CompletionResponse(rendering.body(body), headers=headers)

    if not reply.chat.stream:
        body = await reply.final(exchange, wait)
        return CompletionResponse(rendering.body(body), headers=answers.hitl_headers(body["hitl"]))

    # The headers leave with the 200, before any decision: they say the answer is held, and where to poll.
    pending = answers.hitl_headers(reply.body(exchange)["hitl"])
    return EventSourceResponse(_events(reply, exchange, wait, rendering), ping=keepalive, headers=pending)


async def _at_once(events: bytes) -> AsyncIterator[bytes]:
    """Events ready now, from an async generator: a plain iterator would be read in a worker thread."""
    yield events


async def _events(reply: Reply, exchange: Exchange, wait: float, rendering: Rendering) -> AsyncIterator[bytes]:
    """The SSE events of an answer whose 200 is already out: at once when it needs no agent, else after the
    wait. A failure from here on can only travel as an SSE error event."""
    try:
        body = await _decided(reply, exchange, wait)
    except GatewayError as exc:
        yield rendering.error_event(exc)
        return
    yield rendering.events(body)
