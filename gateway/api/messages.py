"""Anthropic Messages: `POST /v1/messages`, through the same relay, policy and review as every dialect; only the
words differ (`gateway.conversation.messages`), errors included."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api import flow
from gateway.conversation import chat as chat_request
from gateway.conversation import messages
from gateway.deps import CurrentKey, RelayDep, RequestId
from gateway.errors import GatewayError
from gateway.models import Dialect

router = APIRouter(prefix="/v1")


class Messages:
    """Anthropic's words for a delivered completion: a Message, or its stream of events."""

    dialect = Dialect.MESSAGES

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        return messages.render(completion)

    def events(self, completion: dict[str, Any]) -> bytes:
        return messages.events(self.body(completion))

    def error_event(self, error: GatewayError) -> bytes:
        return messages.event("error", {k: v for k, v in messages.error_body(error).items() if k != "type"})

    def flowing(self, head: dict[str, Any]) -> flow.Flow | None:
        return MessageFlow(head)


class MessageFlow:
    """A progressive stream in Anthropic's words: `message_start` and a text block opened at once, each released
    chunk as a `text_delta`, then the rest of the decided answer, its other blocks, the stop reason and usage."""

    def __init__(self, head: dict[str, Any]) -> None:
        self.head = head

    def opening(self) -> bytes:
        started = messages.render({**self.head, "id": self.head["id"], "choices": [{"message": {"content": ""}}]})
        started = {**started, "content": [], "stop_reason": None}
        return b"".join(
            [
                messages.event("message_start", {"message": started}),
                messages.event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
                messages.event("ping", {}),
            ]
        )

    def delta(self, text: str) -> bytes:
        return messages.event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})

    def closing(self, completion: dict[str, Any], sent: str) -> bytes:
        return messages.rest_of(messages.render(completion), sent)


@router.post("/messages")
async def create_message(request: Request, key: CurrentKey, relay: RelayDep, request_id: RequestId) -> Response:
    body = chat_request.load(await request.body())
    raw = chat_request.with_hitl_headers(messages.to_chat(body), request.headers)
    return await flow.answer(request, key, relay, request_id, (chat_request.validate(raw), raw), Messages())
