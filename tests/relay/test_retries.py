"""Retries are idempotent: a request with the same Idempotency-Key, or the OpenAI SDK's retry of the same
body, joins the exchange it repeats and gets its outcome; no second upstream call, no second review."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import col, select

from gateway.app import create_app
from gateway.models import Action, Exchange, Review, ReviewEvent
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests import factories
from tests.factories import MODEL

UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)
QUESTION = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]}


def headers(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


async def counts(runtime: Runtime) -> tuple[int, int]:
    async with runtime.sessions() as session:
        exchanges = len((await session.exec(select(Exchange))).all())
        reviews = len((await session.exec(select(Review))).all())
    return exchanges, reviews


async def test_the_same_idempotency_key_waits_on_the_same_review(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    body = {**QUESTION, "hitl": {"wait": 10}}
    keyed = headers(api_key, **{"Idempotency-Key": "order-42-refund"})
    first = asyncio.create_task(aclient.post("/v1/chat/completions", json=body, headers=keyed))
    review = await factories.open_review(runtime)
    second = asyncio.create_task(aclient.post("/v1/chat/completions", json=body, headers=keyed))
    await asyncio.sleep(0.2)  # the second one is waiting too
    await factories.decide_as(runtime, senior[0], review.id, Action.EDIT, text="Paris.")
    answers = await asyncio.gather(first, second)
    for answer in answers:
        assert answer.json()["choices"][0]["message"]["content"] == "Paris."
        assert answer.json()["hitl"]["review_id"] == review.id and answer.headers["x-hitl-status"] == "edited"
    assert "idempotent-replayed" not in answers[0].headers and answers[1].headers["idempotent-replayed"] == "true"
    assert upstream.chat.call_count == 1 and await counts(runtime) == (1, 1)
    async with runtime.sessions() as session:
        kinds = [event.kind for event in (await session.exec(select(ReviewEvent))).all()]
    assert "retried" in kinds


async def test_an_idempotency_key_on_another_body_is_refused(
    aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer()
    keyed = headers(api_key, **{"Idempotency-Key": "k-1"})
    assert (await aclient.post("/v1/chat/completions", json=QUESTION, headers=keyed)).status_code == 200
    other = {**QUESTION, "messages": [{"role": "user", "content": "Capital of Spain?"}]}
    refused = await aclient.post("/v1/chat/completions", json=other, headers=keyed)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "idempotency_key_reused"
    assert upstream.chat.call_count == 1


@pytest.mark.parametrize("key", ["", "with space", "x" * 256, "caf\u00e9"])
async def test_a_malformed_idempotency_key_is_refused(
    aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, key: str
) -> None:
    upstream.answer()
    refused = await aclient.post(
        "/v1/chat/completions",
        json=QUESTION,
        headers=[("Authorization", f"Bearer {api_key}"), ("Idempotency-Key", key.encode())],  # type: ignore[list-item]
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_idempotency_key"
    assert upstream.chat.call_count == 0


async def test_an_sdk_retry_of_the_same_body_joins_the_pending_review(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    body = {**QUESTION, "hitl": {"wait": 0}}
    first = await aclient.post(
        "/v1/chat/completions", json=body, headers=headers(api_key, **{"x-stainless-retry-count": "0"})
    )
    # The same body, keys in another order, marked as the SDK's first retry.
    reordered = {"hitl": {"wait": 0}, "messages": QUESTION["messages"], "model": MODEL}
    retry = await aclient.post(
        "/v1/chat/completions", json=reordered, headers=headers(api_key, **{"x-stainless-retry-count": "1"})
    )
    assert retry.json()["hitl"]["review_id"] == first.json()["hitl"]["review_id"]
    assert retry.json()["id"] == first.json()["id"] and retry.headers["idempotent-replayed"] == "true"
    assert upstream.chat.call_count == 1 and await counts(runtime) == (1, 1)

    # Not a retry (count 0): the same question asked again is a new exchange.
    again = await aclient.post(
        "/v1/chat/completions", json=body, headers=headers(api_key, **{"x-stainless-retry-count": "0"})
    )
    assert again.json()["hitl"]["review_id"] != first.json()["hitl"]["review_id"]
    assert upstream.chat.call_count == 2 and await counts(runtime) == (2, 2)


async def test_a_retry_after_the_decision_gets_it_at_once(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    body = {**QUESTION, "hitl": {"wait": 0}}
    first = await aclient.post("/v1/chat/completions", json=body, headers=headers(api_key))
    await factories.decide_as(runtime, senior[0], first.json()["hitl"]["review_id"], Action.OVERRIDE, text="Ask us.")
    retry = await aclient.post(
        "/v1/chat/completions", json=body, headers=headers(api_key, **{"x-stainless-retry-count": "2"})
    )
    assert retry.json()["choices"][0]["message"]["content"] == "Ask us."
    assert retry.json()["hitl"]["status"] == "overridden"


async def test_a_retry_of_a_released_answer_replays_it(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer()
    first = await aclient.post("/v1/chat/completions", json=QUESTION, headers=headers(api_key))
    retry = await aclient.post(
        "/v1/chat/completions", json=QUESTION, headers=headers(api_key, **{"x-stainless-retry-count": "1"})
    )
    assert retry.json() == first.json() and retry.headers["x-hitl-status"] == "released"
    assert upstream.chat.call_count == 1


async def test_a_retry_while_the_first_is_still_at_the_upstream_waits_for_it(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.5)
        return httpx.Response(200, json=factories.completion_body())

    upstream.respond(slow)
    first = asyncio.create_task(aclient.post("/v1/chat/completions", json=QUESTION, headers=headers(api_key)))
    await asyncio.sleep(0.1)
    retry = await aclient.post(
        "/v1/chat/completions", json=QUESTION, headers=headers(api_key, **{"x-stainless-retry-count": "1"})
    )
    assert retry.json()["id"] == (await first).json()["id"] and upstream.chat.call_count == 1


async def test_a_retry_of_a_request_that_failed_asks_again(
    aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer({"error": {"message": "overloaded"}}, status=503)
    failed = await aclient.post("/v1/chat/completions", json=QUESTION, headers=headers(api_key))
    assert failed.status_code == 502
    upstream.answer()
    retry = await aclient.post(
        "/v1/chat/completions", json=QUESTION, headers=headers(api_key, **{"x-stainless-retry-count": "1"})
    )
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert upstream.chat.call_count == 2


@pytest.mark.parametrize("window", [0.0, 60.0])
async def test_the_window_bounds_what_a_retry_joins(
    make_settings: Callable[..., Settings],
    clock: factories.ManualClock,
    api_key: str,
    upstream: factories.UpstreamMock,
    window: float,
) -> None:
    upstream.answer()
    app = create_app(make_settings(idempotency_window=window), clock=clock)
    retried = headers(api_key, **{"Idempotency-Key": "k-2"})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            first = (await client.post("/v1/chat/completions", json=QUESTION, headers=retried)).json()
            soon = (await client.post("/v1/chat/completions", json=QUESTION, headers=retried)).json()
            clock.advance(61)
            late = (await client.post("/v1/chat/completions", json=QUESTION, headers=retried)).json()
    ids: list[Any] = [first["id"], soon["id"], late["id"]]
    if window:
        assert ids[0] == ids[1] != ids[2]
    else:
        assert len(set(ids)) == 3
    runtime_calls = upstream.chat.call_count
    assert runtime_calls == len(set(ids))
    async with app.router.lifespan_context(app):
        async with app.state.runtime.sessions() as session:
            stored = (await session.exec(select(Exchange).order_by(col(Exchange.created_at)))).all()
    assert [exchange.idempotency_key for exchange in stored] == ["k-2"] * len(set(ids))
