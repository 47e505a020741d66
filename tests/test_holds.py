"""Held answers: persisted first, released by a decision, or answered with the placeholder at the deadline."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import db
from gateway.holds import HoldHub
from gateway.models import Action, Exchange, ExchangeStatus
from gateway.runtime import Runtime
from tests import factories
from tests.factories import MODEL, aconsole_login

UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)
CANDIDATE = "Lyon is the capital of France."


def chat(wait: float | None = None, stream: bool = False) -> dict:
    body: dict = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "stream": stream}
    if wait is not None:
        body["hitl"] = {"wait": wait}
    return body


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_edit_releases_the_waiting_client(
    app: FastAPI,
    aclient: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    senior: tuple[str, str],
) -> None:
    """How fast is measured in `benchmarks/holds.py`, never here: this checks what the client gets."""
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    token = await aconsole_login(aclient, *senior)
    waiting = asyncio.create_task(aclient.post("/v1/chat/completions", json=chat(wait=10), headers=auth(api_key)))
    review = await factories.open_review(runtime)
    # Persisted before anything else: the exchange is there, held, while the client still waits.
    async with runtime.sessions() as session:
        exchange = await session.get(Exchange, review.exchange_id)
    assert exchange is not None and exchange.status == ExchangeStatus.HELD and not waiting.done()

    decided = await aclient.post(
        f"/console/reviews/{review.id}/decide",
        data={"action": "edit", "text": "Paris is the capital of France.", "csrftoken": token},
    )
    assert decided.status_code == 303, decided.text
    body = (await asyncio.wait_for(waiting, 5)).json()
    assert body["choices"][0]["message"]["content"] == "Paris is the capital of France."
    assert body["hitl"]["status"] == "edited" and body["choices"][0]["logprobs"] is None


async def test_approve_releases_the_candidate(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    waiting = asyncio.create_task(aclient.post("/v1/chat/completions", json=chat(wait=10), headers=auth(api_key)))
    review = await factories.open_review(runtime)
    await factories.decide_as(runtime, senior[0], review.id, Action.APPROVE)
    body = (await waiting).json()
    assert body["choices"][0]["message"]["content"] == CANDIDATE
    assert body["hitl"]["status"] == "approved"


def test_deadline_returns_placeholder_then_poll_gets_the_decision(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str], database_url: str
) -> None:
    upstream.answer(UNSURE)
    result = openai.OpenAI(
        base_url="http://testserver/v1", api_key=api_key, http_client=client, max_retries=0
    ).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Capital of France?"}], extra_body={"hitl": {"wait": 0.3}}
    )
    hitl = result.model_extra["hitl"]
    assert hitl["status"] == "pending" and hitl["review_id"].startswith("rev-")
    assert hitl["poll_url"] == f"http://testserver/v1/reviews/{hitl['review_id']}"
    assert result.object == "chat.completion" and CANDIDATE not in result.choices[0].message.content
    assert "support team" in result.choices[0].message.content

    poll = client.get(f"/v1/reviews/{hitl['review_id']}", headers=auth(api_key))
    assert poll.status_code == 200 and poll.json()["status"] == "pending" and poll.json()["completion"] is None

    # Another API key must not see it.
    other = factories.make_api_key(database_url, "other")
    assert client.get(f"/v1/reviews/{hitl['review_id']}", headers=auth(other)).status_code == 404

    from tests.factories import console_login

    token = console_login(client, *senior)
    client.post(
        f"/console/reviews/{hitl['review_id']}/decide",
        data={"action": "override", "text": "Please call us.", "csrftoken": token},
    )
    decided = client.get(f"/v1/reviews/{hitl['review_id']}", headers=auth(api_key)).json()
    assert decided["status"] == "overridden"
    assert decided["completion"]["choices"][0]["message"]["content"] == "Please call us."
    assert decided["completion"]["id"] == hitl["exchange_id"]


async def test_long_poll_wakes_on_decision(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    first = (await aclient.post("/v1/chat/completions", json=chat(wait=0), headers=auth(api_key))).json()
    review_id = first["hitl"]["review_id"]
    polling = asyncio.create_task(aclient.get(f"/v1/reviews/{review_id}?wait=10", headers=auth(api_key)))
    await asyncio.sleep(0.05)
    assert not polling.done()
    await factories.decide_as(runtime, senior[0], review_id, Action.EDIT, text="Paris.")
    body = (await asyncio.wait_for(polling, 1)).json()
    assert body["status"] == "edited" and body["completion"]["choices"][0]["message"]["content"] == "Paris."


async def test_decision_from_another_process_is_seen_by_polling(
    app: FastAPI,
    aclient: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    senior: tuple[str, str],
    database_url: str,
) -> None:
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    waiting = asyncio.create_task(aclient.post("/v1/chat/completions", json=chat(wait=10), headers=auth(api_key)))
    review = await factories.open_review(runtime)
    # A second engine and hub stand in for another replica: this process's hub is never notified.
    engine = db.create_engine(database_url)
    try:
        sessions = db.session_factory(engine)
        elsewhere = replace(runtime.desk, sessions=sessions, holds=HoldHub(sessions, 1.0))
        await factories.decide_as(runtime, senior[0], review.id, Action.OVERRIDE, "Elsewhere.", desk=elsewhere)
    finally:
        await engine.dispose()
    body = (await asyncio.wait_for(waiting, 2)).json()  # poll_interval is 0.2 s in the test settings
    assert body["choices"][0]["message"]["content"] == "Elsewhere."


def _events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.keepalive(1.0)
def test_stream_never_carries_an_unreviewed_token(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(UNSURE)
    response = client.post("/v1/chat/completions", json=chat(wait=1.5, stream=True), headers=auth(api_key))
    assert response.status_code == 200
    assert "Lyon" not in response.text and "-1.5" not in response.text
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["hitl"]["status"] == "pending" for c in chunks)
    # Keep-alive comments went out while it waited (keepalive is 1 s here).
    assert any(line.startswith(":") for line in response.text.splitlines())


async def test_stream_held_then_edited(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    client = openai.AsyncOpenAI(base_url="http://testserver/v1", api_key=api_key, http_client=aclient, max_retries=0)

    async def read() -> list:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Capital of France?"}],
            stream=True,
            extra_body={"hitl": {"wait": 10}},
        )
        return [chunk async for chunk in stream]

    reading = asyncio.create_task(read())
    review = await factories.open_review(runtime)
    await factories.decide_as(runtime, senior[0], review.id, Action.EDIT, text="Paris is the capital.")
    chunks = await asyncio.wait_for(reading, 5)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris is the capital."
    assert chunks[-1].model_extra["hitl"]["status"] == "edited"


def test_wait_is_bounded_by_settings(client: TestClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.answer(UNSURE)
    response = client.post("/v1/chat/completions", json=chat(wait=31), headers=auth(api_key))
    assert response.status_code == 400 and response.json()["error"]["param"] == "hitl.wait"
    poll = client.get("/v1/reviews/rev-missing?wait=1", headers=auth(api_key))
    assert poll.status_code == 404


@pytest.mark.parametrize("stakes", ["high"])
def test_rule_forces_senior_tier(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, database_url: str, stakes: str
) -> None:
    upstream.answer(factories.completion_body(logprob=-0.001))
    body = chat(wait=0) | {"metadata": {"stakes": stakes}}
    result = client.post("/v1/chat/completions", json=body, headers=auth(api_key)).json()
    assert result["hitl"]["status"] == "pending" and result["hitl"]["tier"] == "senior"
