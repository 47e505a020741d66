"""A client that streams gets its upstream streamed: the chunks are put together (text, tool call fragments,
logprobs, usage) into the completion scoring reads, and a buffered stream keeps the gateway's promise whatever
the upstream does: no token of a held answer before its decision, no partial answer from a failed or cut stream,
in every dialect."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.conversation.chunks import Assembled
from gateway.errors import UpstreamError
from gateway.models import Exchange
from tests import factories
from tests.factories import MODEL, tool_call

UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)
CONFIDENT = factories.completion_body("Paris is the capital of France.", logprob=-0.001)


def _sse(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def _cut(completion: dict[str, Any]) -> bytes:
    """The stream of `completion` cut after its third event: no finish reason, no [DONE]."""
    return b"".join(event + b"\n\n" for event in factories.stream_of(completion).split(b"\n\n")[:3])


def _without_logprobs(completion: dict[str, Any]) -> dict[str, Any]:
    choice = {**completion["choices"][0], "logprobs": None}
    return {**completion, "choices": [choice]}


FAULTS = {
    "held": lambda request: _sse(factories.stream_of(UNSURE)),
    "no logprobs": lambda request: _sse(factories.stream_of(_without_logprobs(UNSURE))),
    "http 500": lambda request: httpx.Response(500, json={"error": {"message": "overloaded"}}),
    "http 429": lambda request: httpx.Response(429, json={"error": {"message": "slow"}}, headers={"retry-after": "7"}),
    "timeout": httpx.ReadTimeout("timed out"),
    "malformed": lambda request: _sse(factories.stream_of(UNSURE)[:200] + b"\n\ndata: {Lyon is not json\n\n"),
    "cut mid-stream": lambda request: _sse(_cut(UNSURE)),
}  # fmt: skip
DIALECTS = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Capital of France?"}]}),
    "responses": ("/v1/responses", {"input": "Capital of France?"}),
    "messages": ("/v1/messages", {"max_tokens": 100, "messages": [{"role": "user", "content": "Capital of France?"}]}),
}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fault", FAULTS)
def test_a_buffered_stream_sends_no_token_of_a_held_or_failed_answer(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, dialect: str, fault: str
) -> None:
    upstream.respond(FAULTS[fault])
    path, body = DIALECTS[dialect]
    sent = client.post(
        path, json={"model": MODEL, **body, "stream": True, "hitl": {"wait": 0}},
        headers={"Authorization": f"Bearer {api_key}"},
    )  # fmt: skip
    assert upstream.sent()["stream"] is True  # the upstream was streamed
    assert "Lyon" not in sent.text and "capital" not in sent.text
    if fault in ("held", "no logprobs"):
        assert sent.status_code == 200 and sent.headers["x-hitl-status"] == "pending"
    elif sent.status_code == 200:  # the error went out as an event of the stream
        assert "error" in sent.text
    else:
        assert sent.status_code == {"http 500": 502, "http 429": 429, "timeout": 504}.get(fault, 502), sent.text
        if fault == "http 429":
            assert sent.headers["retry-after"] == "7"


def test_a_streamed_answer_is_released_whole_with_its_logprobs_read_from_the_chunks(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    upstream.answer(CONFIDENT)
    sent = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "stream": True},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert sent.headers["x-hitl-status"] == "released"
    chunks = [json.loads(line[6:]) for line in sent.text.splitlines() if line.startswith("data: {")]
    text = "".join((chunk["choices"] or [{}])[0].get("delta", {}).get("content") or "" for chunk in chunks)
    assert text == "Paris is the capital of France."
    with factories.sync_session(database_url) as session:
        (exchange,) = session.exec(select(Exchange)).all()
    assert exchange.signals["decided_by"] == "logprobs" and exchange.confidence is not None
    assert exchange.confidence > 0.9


def test_chunks_make_the_completion_the_upstream_would_have_answered() -> None:
    refund = tool_call("issue_refund", {"order_id": "42", "amount": 90}, "call_r")
    lookup = tool_call("lookup", {"order": "42"}, "call_l")
    whole = factories.completion_body("Refunding now.", logprob=-0.2, tool_calls=[refund, lookup])
    assembled = Assembled("up")
    for event in factories.stream_of(whole).split(b"\n\n"):
        if event.startswith(b"data: {"):
            assembled.add(json.loads(event[6:]))
    made = assembled.completion()
    (choice,) = made["choices"]
    assert choice["message"]["content"] == "Refunding now." and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [refund, lookup]
    assert choice["logprobs"]["content"] == whole["choices"][0]["logprobs"]["content"]
    assert made["usage"] == whole["usage"] and made["model"] == whole["model"]


def test_a_stream_that_stops_before_its_finish_reason_is_no_answer() -> None:
    assembled = Assembled("up")
    for event in _cut(UNSURE).split(b"\n\n"):
        if event.startswith(b"data: {"):
            assembled.add(json.loads(event[6:]))
    assert assembled.content  # some text arrived
    with pytest.raises(UpstreamError, match="ended its stream before finishing"):
        assembled.completion()
