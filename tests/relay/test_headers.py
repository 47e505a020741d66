"""Every chat completion says what happened in `x-hitl-*` headers too: LangChain and agent frameworks drop
the body's `hitl` field but can read headers."""

from __future__ import annotations

import asyncio

import httpx
import openai
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.models import Action
from gateway.runtime import Runtime
from tests import factories
from tests.factories import MODEL

CONFIDENT = factories.completion_body("Paris is the capital of France.", logprob=-0.001)
UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)
QUESTION = [{"role": "user", "content": "Capital of France?"}]


def sdk(client: TestClient, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


def test_released_answer_headers_match_the_body(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    raw = sdk(client, api_key).chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION)
    completion = raw.parse()
    hitl = completion.model_extra["hitl"]  # type: ignore[index]
    assert raw.headers["x-hitl-status"] == "released" == hitl["status"]
    assert raw.headers["x-hitl-exchange-id"] == completion.id == hitl["exchange_id"]
    assert float(raw.headers["x-hitl-confidence"]) == round(hitl["confidence"], 4)
    assert "x-hitl-review-id" not in raw.headers and "x-hitl-poll-url" not in raw.headers


def test_pending_answer_headers_name_the_review_and_where_to_poll(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(UNSURE)
    raw = sdk(client, api_key).chat.completions.with_raw_response.create(
        model=MODEL, messages=QUESTION, extra_body={"hitl": {"wait": 0}}
    )
    hitl = raw.parse().model_extra["hitl"]  # type: ignore[index]
    assert raw.headers["x-hitl-status"] == "pending"
    assert raw.headers["x-hitl-review-id"] == hitl["review_id"]
    assert raw.headers["x-hitl-poll-url"] == hitl["poll_url"] and hitl["poll_url"].endswith(hitl["review_id"])


def test_unscored_answer_says_so(client: TestClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.answer(factories.completion_body("Paris.", logprob=None))
    response = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": QUESTION, "hitl": {"wait": 0}},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.headers["x-hitl-confidence"] == "unscored" and response.json()["hitl"]["confidence"] is None


def test_streamed_answers_carry_the_headers(client: TestClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.answer(CONFIDENT)
    body = {"model": MODEL, "messages": QUESTION, "stream": True}
    auth = {"Authorization": f"Bearer {api_key}"}
    released = client.post("/v1/chat/completions", json=body, headers=auth)
    assert released.headers["content-type"].startswith("text/event-stream")
    assert released.headers["x-hitl-status"] == "released" and released.headers["x-hitl-exchange-id"].startswith(
        "chatcmpl-"
    )
    upstream.answer(UNSURE)
    held = client.post("/v1/chat/completions", json=body | {"hitl": {"wait": 0}}, headers=auth)
    # The headers leave before any decision: a held stream says pending, and where to poll.
    assert held.headers["x-hitl-status"] == "pending" and held.headers["x-hitl-review-id"].startswith("rev-")
    assert held.headers["x-hitl-poll-url"].endswith(held.headers["x-hitl-review-id"])


async def test_decided_answer_headers_give_the_final_status(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    body = {"model": MODEL, "messages": QUESTION, "hitl": {"wait": 10}}
    waiting = asyncio.create_task(
        aclient.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    )
    review_id = (await factories.open_review(runtime)).id
    await factories.decide_as(runtime, senior[0], review_id, Action.EDIT, "Paris is the capital of France.")
    response = await waiting
    assert response.headers["x-hitl-status"] == "edited" == response.json()["hitl"]["status"]
    assert response.headers["x-hitl-review-id"] == review_id and "x-hitl-poll-url" not in response.headers
