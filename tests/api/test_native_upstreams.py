"""Every client dialect against an upstream that speaks the Responses API or Anthropic Messages natively: the
conversation crosses over both ways, scoring reads the Responses upstream's own logprobs, and a held answer is
reviewed and delivered in the client's dialect whatever the upstream spoke (an edited `tool_use` from an Anthropic
upstream reaches a chat client as a `tool_calls` entry with its id)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.app import create_app
from gateway.models import Action, Exchange
from gateway.runtime import Runtime
from gateway.settings import Settings, UpstreamSettings
from tests import factories
from tests.factories import HOLD_TOOL_CALLS, MODEL, UPSTREAM


def response_body(text: str, logprob: float) -> dict[str, Any]:
    """A Response from an upstream that speaks the Responses API, each word's token at `logprob`."""
    tokens = factories.completion_body(text, logprob=logprob)["choices"][0]["logprobs"]["content"]
    return {
        "id": "resp_up",
        "object": "response",
        "created_at": 1764800000,
        "status": "completed",
        "model": "gpt-5-mini",
        "output": [{"type": "message", "id": "msg_up", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": tokens}]}],
        "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
    }  # fmt: skip


def upstream_speaking(api: str) -> UpstreamSettings:
    return UpstreamSettings(name=MODEL, model="native-model", api_base=UPSTREAM, api_key="sk-up", api=api)


def stored(database_url: str) -> list[Exchange]:
    with factories.sync_session(database_url) as session:
        return list(session.exec(select(Exchange)).all())


@pytest.fixture
def responses_client(make_settings: Callable[..., Settings], clock: factories.ManualClock) -> TestClient:
    return TestClient(create_app(make_settings(upstreams=[upstream_speaking("responses")]), clock=clock))


@pytest.mark.parametrize(("logprob", "status"), [(-0.001, "released"), (-1.5, "pending")])
def test_a_chat_client_is_scored_on_the_responses_upstreams_own_logprobs(
    responses_client: TestClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
    logprob: float,
    status: str,
) -> None:
    route = upstream.router.post("/responses").mock(
        return_value=httpx.Response(200, json=response_body("Paris is the capital of France.", logprob))
    )
    with responses_client as client:
        reply = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}],
                  "hitl": {"wait": 0}},
        )  # fmt: skip
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["hitl"]["status"] == status
    if status == "released":
        assert body["choices"][0]["message"]["content"] == "Paris is the capital of France."
    else:
        assert "Paris" not in reply.text  # the held candidate never reaches the client
    sent = json.loads(route.calls.last.request.content)
    assert sent["include"] == ["message.output_text.logprobs"] and sent["top_logprobs"] >= 5
    (exchange,) = stored(database_url)
    assert exchange.signals["decided_by"] == "logprobs"
    assert exchange.confidence is not None and (exchange.confidence > 0.9) == (status == "released")


def test_an_anthropic_client_is_answered_by_a_responses_upstream(
    responses_client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.router.post("/responses").mock(
        return_value=httpx.Response(200, json=response_body("Paris is the capital of France.", -0.001))
    )
    with responses_client as client:
        reply = client.post(
            "/v1/messages",
            headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
            json={"model": MODEL, "max_tokens": 100, "system": "Be brief.",
                  "messages": [{"role": "user", "content": "Capital of France?"}]},
        )  # fmt: skip
    assert reply.status_code == 200, reply.text
    message = reply.json()
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    assert message["content"] == [{"type": "text", "text": "Paris is the capital of France."}]


@pytest.fixture
def anthropic_upstream_app(
    make_settings: Callable[..., Settings], tmp_path: Path, clock: factories.ManualClock
) -> FastAPI:
    policy = tmp_path / "policy.yaml"
    policy.write_text(HOLD_TOOL_CALLS)
    return create_app(make_settings(upstreams=[upstream_speaking("messages")], policy_path=policy), clock=clock)


async def test_a_tool_use_from_an_anthropic_upstream_is_edited_and_reaches_a_chat_client_as_a_tool_call(
    anthropic_upstream_app: FastAPI, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    message = {
        "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "tool_use", "id": "toolu_refund", "name": "issue_refund",
                     "input": {"order_id": "42", "amount": 900}}],
        "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 20, "output_tokens": 9},
    }  # fmt: skip
    route = upstream.router.post("/messages").mock(return_value=httpx.Response(200, json=message))
    tools = [{"type": "function", "function": {"name": "issue_refund", "parameters": factories.REFUND_PARAMETERS}}]
    app = anthropic_upstream_app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as aclient:
            runtime: Runtime = app.state.runtime
            sdk = openai.AsyncOpenAI(base_url="http://testserver/v1", api_key=api_key, http_client=aclient,
                                     max_retries=0)  # fmt: skip
            waiting = asyncio.create_task(
                sdk.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Refund order 42"}], tools=tools,
                    extra_body={"hitl": {"wait": 10}},
                )
            )  # fmt: skip
            review = await factories.open_review(runtime)
            edited = {"toolu_refund": '{"order_id": "42", "amount": 90}'}
            await factories.decide_as(runtime, agent[0], review.id, Action.EDIT, arguments=edited)
            completion = await asyncio.wait_for(waiting, 10)
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.id == "toolu_refund" and call.function.name == "issue_refund"
    assert json.loads(call.function.arguments) == {"order_id": "42", "amount": 90}
    sent = json.loads(route.calls.last.request.content)
    assert route.calls.last.request.headers["x-api-key"] == "sk-up"
    assert sent["tools"] == [{"name": "issue_refund", "input_schema": factories.REFUND_PARAMETERS}]
    assert "logprobs" not in sent and "top_logprobs" not in sent


def streamed_if_asked(body: bytes, whole: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    """A native upstream's reply: its event stream when the request asked for one, else the whole body."""

    def reply(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=whole)

    return reply


def test_a_progressive_stream_flows_from_a_responses_upstreams_own_stream(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clock: factories.ManualClock,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
) -> None:
    sure, unsure = "Paris is the capital of France. ", "Montmartre has seven people."
    whole = response_body(sure + unsure, -0.001)
    unsure_tokens = factories.completion_body(unsure, logprob=-2.0)["choices"][0]["logprobs"]["content"]
    whole["output"][0]["content"][0]["logprobs"] = [
        *factories.completion_body(sure.strip(), logprob=-0.001)["choices"][0]["logprobs"]["content"],
        factories.token(" ", -0.001),
        *unsure_tokens,
    ]
    route = upstream.router.post("/responses").mock(
        side_effect=streamed_if_asked(factories.responses_stream_of(whole), whole)
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("tiers: [agent]\nstream: progressive\nbands: [{min: 0.9, route: release}, "
                      "{min: 0.0, route: hold, tier: agent}]\nunscored: {route: hold, tier: agent}\n")  # fmt: skip
    app = create_app(make_settings(upstreams=[upstream_speaking("responses")], policy_path=policy), clock=clock)
    with TestClient(app) as client:
        reply = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "Paris?"}], "stream": True,
                  "hitl": {"wait": 0}},
        )  # fmt: skip
    assert reply.headers["x-hitl-status"] == "progressive"
    chunks = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
    first, *after = [text for text in texts if text]
    assert first == sure.strip() and "Montmartre" not in reply.text  # the sure sentence, then the pending placeholder
    assert json.loads(route.calls.last.request.content)["stream"] is True
    (exchange,) = stored(database_url)
    assert exchange.status == "held" and exchange.released_chars == len(first)
    assert exchange.candidate_text == sure + unsure  # the whole answer, put together from the upstream's events


def test_a_buffered_stream_from_an_anthropic_upstream_leaks_nothing_of_a_held_answer(
    make_settings: Callable[..., Settings],
    clock: factories.ManualClock,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
) -> None:
    message = {"id": "msg_up", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
               "content": [{"type": "text", "text": "Lyon is the capital of France."}], "stop_reason": "end_turn",
               "stop_sequence": None, "usage": {"input_tokens": 20, "output_tokens": 9}}  # fmt: skip
    route = upstream.router.post("/messages").mock(
        side_effect=streamed_if_asked(factories.messages_stream_of(message), message)
    )
    app = create_app(make_settings(upstreams=[upstream_speaking("messages")]), clock=clock)
    with TestClient(app) as client:
        reply = client.post(
            "/v1/messages",
            headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
            json={"model": MODEL, "max_tokens": 100, "stream": True, "hitl": {"wait": 0},
                  "messages": [{"role": "user", "content": "Capital of France?"}]},
        )  # fmt: skip
    assert reply.status_code == 200 and "event: message_stop" in reply.text
    assert "Lyon" not in reply.text  # unscored (no logprobs, no judge here): held, and nothing of it sent
    assert json.loads(route.calls.last.request.content)["stream"] is True
    (exchange,) = stored(database_url)
    assert exchange.status == "held" and exchange.candidate_text == "Lyon is the capital of France."
