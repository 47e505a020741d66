"""The Responses API through the gateway, with the openai SDK as apps use it (`responses.create`, `.stream`,
`.parse`, `.retrieve`): the same scoring, policy and review as chat completions, answered in the Responses API's
own words; a held answer's text never reaches the client before its decision."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlmodel import select

from gateway.app import create_app
from gateway.models import Action, Dialect, Exchange
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests import factories
from tests.factories import HOLD_TOOL_CALLS, MODEL, REFUND_PARAMETERS, tool_call

CONFIDENT = factories.completion_body("Paris is the capital of France.", logprob=-0.001)
UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)
REFUND = {
    "type": "function",
    "name": "issue_refund",
    "description": "Refund an order.",
    "parameters": REFUND_PARAMETERS,
}


def sdk(client: TestClient | httpx.AsyncClient, key: str) -> Any:
    if isinstance(client, httpx.AsyncClient):
        return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


def stored(database_url: str) -> list[Exchange]:
    with factories.sync_session(database_url) as session:
        return list(session.exec(select(Exchange)).all())


def test_a_confident_answer_is_released_as_a_response(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    upstream.answer(CONFIDENT)
    raw = sdk(client, api_key).responses.with_raw_response.create(
        model=MODEL, instructions="Answer in one sentence.", input="Capital of France?", max_output_tokens=50
    )
    response = raw.parse()
    assert response.status == "completed" and response.output_text == "Paris is the capital of France."
    assert response.id.startswith("resp_") and response.instructions == "Answer in one sentence."
    assert raw.headers["x-hitl-status"] == "released" == response.model_extra["hitl"]["status"]
    sent = upstream.sent()  # the upstream, which speaks chat completions, got the translated request
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert sent["max_tokens"] == 50 and "input" not in sent and "instructions" not in sent
    (exchange,) = stored(database_url)
    assert exchange.dialect == Dialect.RESPONSES and response.id == "resp_" + exchange.id.split("-", 1)[1]


def test_a_held_answer_past_its_deadline_is_the_placeholder_then_the_decision(
    app: FastAPI, client: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    gateway = sdk(client, api_key)
    raw = gateway.responses.with_raw_response.create(
        model=MODEL, input="Capital of France?", extra_headers={"x-hitl-wait": "0"}
    )
    response = raw.parse()
    assert raw.headers["x-hitl-status"] == "pending" and "Lyon" not in raw.text  # the candidate never left
    assert response.output_text and response.model_extra["hitl"]["status"] == "pending"
    waiting = gateway.responses.retrieve(response.id)
    assert waiting.status == "in_progress" and waiting.output == []
    review_id = raw.headers["x-hitl-review-id"]
    runtime: Runtime = app.state.runtime
    edit = "Paris is the capital of France."
    client.portal.call(factories.decide_as, runtime, senior[0], review_id, Action.EDIT, edit)  # type: ignore[union-attr]
    decided = gateway.responses.retrieve(response.id)
    assert decided.status == "completed" and decided.output_text == "Paris is the capital of France."
    assert decided.model_extra["hitl"]["status"] == "edited"


async def test_a_waiting_client_gets_the_agents_edit(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    runtime: Runtime = app.state.runtime
    waiting = asyncio.create_task(
        sdk(aclient, api_key).responses.create(model=MODEL, input="Capital?", extra_body={"hitl": {"wait": 10}})
    )
    review = await factories.open_review(runtime)
    await factories.decide_as(runtime, senior[0], review.id, Action.EDIT, "Paris.")
    response = await asyncio.wait_for(waiting, 10)
    assert response.output_text == "Paris." and response.model_extra["hitl"]["status"] == "edited"


def test_a_stream_follows_the_documented_event_sequence(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    with sdk(client, api_key).responses.stream(model=MODEL, input="Capital of France?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "Paris is the capital of France."
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds.index("response.output_item.added") < kinds.index("response.output_text.delta")
    assert kinds.index("response.output_text.done") < kinds.index("response.output_item.done")


def test_a_held_stream_sends_nothing_of_the_candidate(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(UNSURE)
    body = {"model": MODEL, "input": "Capital of France?", "stream": True, "hitl": {"wait": 0}}
    sent = client.post("/v1/responses", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert sent.headers["x-hitl-status"] == "pending" and "Lyon" not in sent.text
    events = [json.loads(line[6:]) for line in sent.text.splitlines() if line.startswith("data: ")]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["hitl"]["status"] == "pending"


class City(BaseModel):
    name: str
    population: int


def test_parse_gets_the_structured_output(client: TestClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.answer(factories.completion_body('{"name": "Paris", "population": 2100000}', logprob=-0.001))
    parsed = sdk(client, api_key).responses.parse(model=MODEL, input="Biggest French city?", text_format=City)
    assert parsed.output_parsed == City(name="Paris", population=2100000)
    form = upstream.sent()["response_format"]
    assert form["type"] == "json_schema" and form["json_schema"]["name"] == "City"


@pytest.fixture
def tool_app(make_settings: Callable[..., Settings], tmp_path: Path, clock: factories.ManualClock) -> FastAPI:
    policy = tmp_path / "policy.yaml"
    policy.write_text(HOLD_TOOL_CALLS)
    return create_app(make_settings(policy_path=policy), clock=clock)


async def test_an_edited_function_call_arrives_as_a_function_call_with_its_id(
    tool_app: FastAPI, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    call = tool_call("issue_refund", {"order_id": "42", "amount": 900}, call_id="call_refund")
    upstream.answer(factories.completion_body(None, logprob=None, tool_calls=[call]))
    async with tool_app.router.lifespan_context(tool_app):
        transport = httpx.ASGITransport(app=tool_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as aclient:
            runtime: Runtime = tool_app.state.runtime
            waiting = asyncio.create_task(
                sdk(aclient, api_key).responses.create(
                    model=MODEL, input="Refund order 42", tools=[REFUND], extra_body={"hitl": {"wait": 10}}
                )
            )
            review = await factories.open_review(runtime)
            edited = {"call_refund": '{"order_id": "42", "amount": 90}'}
            await factories.decide_as(runtime, agent[0], review.id, Action.EDIT, arguments=edited)
            response = await asyncio.wait_for(waiting, 10)
    (item,) = response.output
    assert item.type == "function_call" and item.call_id == "call_refund" and item.name == "issue_refund"
    assert json.loads(item.arguments) == {"order_id": "42", "amount": 90}
    assert upstream.sent()["tools"] == [
        {"type": "function", "function": {k: v for k, v in REFUND.items() if k != "type"}}
    ]


def test_input_items_become_the_conversation(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    items = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "Refund order 42"}]},
        {"type": "function_call", "call_id": "call_1", "name": "issue_refund", "arguments": '{"order_id": "42"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "refunded"},
    ]
    sdk(client, api_key).responses.create(model=MODEL, input=items, tools=[REFUND], tool_choice="auto")
    assert upstream.sent()["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Refund order 42"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("issue_refund", '{"order_id": "42"}')]},
        {"role": "tool", "tool_call_id": "call_1", "content": "refunded"},
    ]


def test_previous_response_id_continues_the_conversation_of_the_same_key_only(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    upstream.answer(CONFIDENT)
    gateway = sdk(client, api_key)
    first = gateway.responses.create(model=MODEL, input="Capital of France?")
    gateway.responses.create(model=MODEL, input="And of Italy?", previous_response_id=first.id)
    assert [message["content"] for message in upstream.sent()["messages"]] == [
        "Capital of France?",
        "Paris is the capital of France.",
        "And of Italy?",
    ]
    other = factories.make_api_key(database_url, "other")
    with pytest.raises(openai.NotFoundError):
        sdk(client, other).responses.create(model=MODEL, input="And?", previous_response_id=first.id)
    with pytest.raises(openai.NotFoundError):
        sdk(client, other).responses.retrieve(first.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({}, "input"),
    ],
)
def test_what_the_gateway_cannot_honour_is_refused_by_name(
    client: TestClient, api_key: str, body: dict[str, Any], param: str
) -> None:
    refused = client.post(
        "/v1/responses", json={"model": MODEL, **body}, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text


def poll(gateway: Any, response_id: str, until: Callable[[Any], bool], seconds: float = 10) -> Any:
    """The SDK's usual retrieve loop, bounded."""
    deadline = time.monotonic() + seconds
    while True:
        response = gateway.responses.retrieve(response_id)
        if until(response):
            return response
        assert time.monotonic() < deadline, f"{response_id} stayed {response.status}"
        time.sleep(0.05)


def test_background_mode_holds_without_a_deadline_until_the_agent_decides(
    app: FastAPI, client: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    gateway = sdk(client, api_key)
    queued = gateway.responses.create(model=MODEL, input="Capital of France?", background=True)
    assert queued.status == "queued" and queued.output == [] and queued.id.startswith("resp_")
    runtime: Runtime = app.state.runtime
    held = poll(gateway, queued.id, lambda response: bool(factories.open_reviews(runtime.settings.database_url)))
    assert held.status == "in_progress" and held.output == []  # no placeholder: nobody is waiting
    time.sleep(0.3)  # longer than any wait: a background hold has no deadline
    assert gateway.responses.retrieve(queued.id).status == "in_progress"
    (review_id,) = factories.open_reviews(runtime.settings.database_url)
    client.portal.call(factories.decide_as, runtime, senior[0], review_id, Action.EDIT, "Paris.")  # type: ignore[union-attr]
    done = poll(gateway, queued.id, lambda response: response.status == "completed")
    assert done.output_text == "Paris." and done.model_extra["hitl"]["status"] == "edited"


def test_a_background_response_is_cancelled_and_leaves_the_queue(
    app: FastAPI, client: TestClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    upstream.answer(UNSURE)
    gateway = sdk(client, api_key)
    queued = gateway.responses.create(model=MODEL, input="Capital of France?", background=True)
    poll(gateway, queued.id, lambda response: bool(factories.open_reviews(database_url)))
    other = sdk(client, factories.make_api_key(database_url, "other"))
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(queued.id)  # only the key that made it
    assert gateway.responses.cancel(queued.id).status == "cancelled"
    assert factories.open_reviews(database_url) == []
    assert gateway.responses.retrieve(queued.id).status == "cancelled"


@pytest.mark.parametrize("arrives", ["while it is asked", "once it is stored"])
def test_a_retried_background_create_gets_the_response_it_made(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, database_url: str, arrives: str
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.5 if arrives == "while it is asked" else 0)
        return httpx.Response(200, json=UNSURE)

    upstream.respond(slow)
    gateway = sdk(client, api_key)
    once = {"model": MODEL, "input": "Capital of France?", "background": True}
    first = gateway.responses.create(**once, extra_headers={"Idempotency-Key": "order-42"})
    if arrives == "once it is stored":
        poll(gateway, first.id, lambda response: bool(factories.open_reviews(database_url)))
    again = gateway.responses.with_raw_response.create(**once, extra_headers={"Idempotency-Key": "order-42"})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().id == first.id and again.parse().status == "in_progress"
    poll(gateway, first.id, lambda response: bool(factories.open_reviews(database_url)))
    assert upstream.chat.call_count == 1 and len(factories.open_reviews(database_url)) == 1
    assert len(stored(database_url)) == 1
    with pytest.raises(openai.BadRequestError, match="another body"):
        gateway.responses.create(
            **{**once, "input": "Capital of Italy?"}, extra_headers={"Idempotency-Key": "order-42"}
        )


def test_a_response_that_was_never_made_is_not_found(client: TestClient, api_key: str) -> None:
    gateway = sdk(client, api_key)
    for unknown in ("resp_" + "0" * 32, "resp_nonsense", "resp_" + "f" * 32):
        with pytest.raises(openai.NotFoundError):
            gateway.responses.retrieve(unknown)


def test_a_held_response_reads_in_the_console_like_any_other_with_its_dialect_named(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    raw = sdk(client, api_key).responses.with_raw_response.create(
        model=MODEL, instructions="Be brief.", input="Capital of France?", extra_headers={"x-hitl-wait": "0"}
    )
    factories.console_login(client, *senior)
    page = client.get(f"/console/reviews/{raw.headers['x-hitl-review-id']}")
    assert page.status_code == 200
    assert "Capital of France?" in page.text and "Lyon is the capital of France." in page.text
    assert "Responses API" in page.text


def test_a_stream_resumes_after_a_sequence_number_and_a_held_one_after_its_decision(
    app: FastAPI, client: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(CONFIDENT)
    gateway = sdk(client, api_key)
    done = gateway.responses.create(model=MODEL, input="Capital of France?")
    whole = [event.sequence_number for event in gateway.responses.retrieve(done.id, stream=True)]
    resumed = list(gateway.responses.retrieve(done.id, stream=True, starting_after=3))
    assert [event.sequence_number for event in resumed] == whole[4:] and resumed[-1].type == "response.completed"

    upstream.answer(UNSURE)
    queued = gateway.responses.create(model=MODEL, input="Capital of Italy?", background=True)
    runtime: Runtime = app.state.runtime
    factories.until(lambda: bool(factories.open_reviews(runtime.settings.database_url)), 10, "the hold")
    (review_id,) = factories.open_reviews(runtime.settings.database_url)
    client.portal.call(factories.decide_as, runtime, senior[0], review_id, Action.EDIT, "Rome.")  # type: ignore[union-attr]
    events = list(gateway.responses.retrieve(queued.id, stream=True))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert deltas == ["Rome."] and events[-1].type == "response.completed"


def test_a_resumed_stream_of_a_held_response_waits_for_the_decision(
    app: FastAPI, client: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    gateway = sdk(client, api_key)
    queued = gateway.responses.create(model=MODEL, input="Capital of Italy?", background=True)
    runtime: Runtime = app.state.runtime
    factories.until(lambda: bool(factories.open_reviews(runtime.settings.database_url)), 10, "the hold")
    got: list[Any] = []
    reading = threading.Thread(target=lambda: got.extend(gateway.responses.retrieve(queued.id, stream=True)))
    reading.start()
    time.sleep(0.3)
    assert not got  # nothing of a held answer before its decision
    (review_id,) = factories.open_reviews(runtime.settings.database_url)
    client.portal.call(factories.decide_as, runtime, senior[0], review_id, Action.EDIT, "Rome.")  # type: ignore[union-attr]
    reading.join(10)
    assert [event.delta for event in got if event.type == "response.output_text.delta"] == ["Rome."]


def test_a_background_stream_starts_queued_and_brings_the_decided_answer(
    app: FastAPI, client: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    upstream.answer(UNSURE)
    gateway = sdk(client, api_key)
    got: list[Any] = []

    def read() -> None:
        got.extend(gateway.responses.create(model=MODEL, input="Capital of Italy?", background=True, stream=True))

    reading = threading.Thread(target=read)
    reading.start()
    runtime: Runtime = app.state.runtime
    factories.until(lambda: bool(factories.open_reviews(runtime.settings.database_url)), 10, "the hold")
    time.sleep(0.3)
    assert [event.type for event in got] == ["response.created"]  # queued at once; nothing of the held answer
    (review_id,) = factories.open_reviews(runtime.settings.database_url)
    client.portal.call(factories.decide_as, runtime, senior[0], review_id, Action.EDIT, "Rome.")  # type: ignore[union-attr]
    reading.join(10)
    first, *rest = got
    assert first.type == "response.created" and first.response.status == "queued" and first.sequence_number == 0
    assert [event.sequence_number for event in got] == list(range(len(got)))
    assert [event.delta for event in rest if event.type == "response.output_text.delta"] == ["Rome."]
    assert rest[-1].type == "response.completed" and rest[-1].response.output_text == "Rome."
    # A client that dropped the stream resumes it where it left off, in the same numbers.
    resumed = list(gateway.responses.retrieve(first.response.id, stream=True, starting_after=2))
    assert [event.sequence_number for event in resumed] == [event.sequence_number for event in got[3:]]


def test_a_background_stream_of_a_failed_upstream_ends_failed(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer({"error": {"message": "overloaded"}}, status=500)
    events = list(
        sdk(client, api_key).responses.create(model=MODEL, input="Capital of Italy?", background=True, stream=True)
    )
    assert [event.type for event in events] == ["response.created", "response.failed"]
    assert events[1].response.status == "failed" and events[1].sequence_number == 1


def test_responses_only_fields_do_not_reach_a_chat_upstream(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    sdk(client, api_key).responses.create(
        model=MODEL, input="Capital?", store=True, truncation="auto", max_tool_calls=2,
        reasoning={"effort": "low"}, include=["message.output_text.logprobs"], top_logprobs=3,
    )  # fmt: skip
    sent = upstream.sent()
    assert not {"store", "truncation", "max_tool_calls", "reasoning", "include", "input"} & sent.keys()
    assert sent["logprobs"] is True and sent["top_logprobs"] >= 3  # what the client asked for, translated
