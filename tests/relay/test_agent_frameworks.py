"""Agent frameworks as real clients of the gateway: openai-agents runs a tool loop through it, LangChain binds
tools and asks for structured output, LiteLLM's SDK calls it; each released and held, decided by an agent
through the console's routes. The upstream is mocked with respx: these tests are about the gateway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import litellm
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from fastapi import FastAPI
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import OpenAIRefusalError
from pydantic import BaseModel
from sqlmodel import col, select

from gateway.app import create_app
from gateway.models import Review, ReviewStatus
from gateway.settings import Settings
from tests import factories
from tests.factories import MODEL, REFUNDS, aconsole_login, tool_call

BASE = "http://testserver/v1"
HOLD = {"hitl": {"wait": 10}}
SHIPS = "Your order 42 ships tomorrow."


class City(BaseModel):
    city: str
    country: str


def scripted(request: httpx.Request) -> httpx.Response:
    """The model: asked about an order it looks it up, asked for a refund it refunds 500, given a tool's result
    it answers with text, asked for a city it answers with JSON."""
    body = json.loads(request.content)
    last = body["messages"][-1]
    question = str(last.get("content") or "")
    if last["role"] == "tool":
        answer = factories.completion_body(f"Done: {last['content']}")
    elif "refund" in question.lower():
        answer = factories.completion_body(
            None, tool_calls=[tool_call("issue_refund", {"order_id": "42", "amount": 500})]
        )
    elif "order" in question.lower():
        answer = factories.completion_body(None, tool_calls=[tool_call("lookup_order", {"order_id": "42"})])
    elif "unsure" in question.lower():
        answer = factories.completion_body('{"city": "Lyon", "country": "France"}', logprob=-1.5)
    else:
        answer = factories.completion_body('{"city": "Paris", "country": "France"}')
    return httpx.Response(200, json=answer)


@pytest.fixture
def refunds_app(make_settings: Callable[..., Settings], tmp_path: Path) -> FastAPI:
    path = tmp_path / "policy.yaml"
    path.write_text(REFUNDS)
    return create_app(make_settings(policy_path=path))


@pytest.fixture
async def gateway(refunds_app: FastAPI, upstream: factories.UpstreamMock) -> AsyncIterator[httpx.AsyncClient]:
    upstream.respond(scripted)
    async with refunds_app.router.lifespan_context(refunds_app):
        transport = httpx.ASGITransport(app=refunds_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


async def edit_when_held(
    url: str, console: httpx.AsyncClient, who: tuple[str, str], arguments: dict[str, Any] | None = None, **form: str
) -> str:
    """Wait for the held review, then decide it through the console's own routes, as an agent would."""
    review_id = None
    for _ in range(200):
        with factories.sync_session(url) as session:
            review_id = session.exec(select(Review.id).where(col(Review.status) == ReviewStatus.OPEN)).first()
        if review_id:
            break
        await asyncio.sleep(0.05)
    assert review_id, "nothing was held"
    token = await aconsole_login(console, *who)
    data = {"csrftoken": token, **form}
    if arguments is not None:
        data.update(action="edit", call="call_1", arguments=json.dumps(arguments))
    decided = await console.post(f"/console/reviews/{review_id}/decide", data=data)
    assert decided.status_code == 303, decided.text
    return review_id


# --- openai-agents ------------------------------------------------------------------------------------------


def agent_with_tools(
    gateway: httpx.AsyncClient, api_key: str, executed: list[tuple[str, Any]], responses: bool = False
) -> Agent[Any]:
    """The support agent; with `responses`, on openai-agents' default model (the Responses API)."""

    @function_tool
    def lookup_order(order_id: str) -> str:
        """Look up where an order is."""
        executed.append(("lookup_order", order_id))
        return f"order {order_id}: ships tomorrow"

    @function_tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund part of an order."""
        executed.append(("issue_refund", amount))
        return f"refunded {amount:g} on order {order_id}"

    client = openai.AsyncOpenAI(base_url=BASE, api_key=api_key, http_client=gateway, max_retries=0)
    return Agent(
        name="support",
        instructions="Help the customer.",
        tools=[lookup_order, issue_refund],
        model=OpenAIResponsesModel(model=MODEL, openai_client=client)
        if responses
        else OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        model_settings=ModelSettings(extra_body=HOLD),
    )


async def test_openai_agents_runs_a_released_tool_call(
    gateway: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    set_tracing_disabled(True)
    executed: list[tuple[str, Any]] = []
    result = await Runner.run(agent_with_tools(gateway, api_key, executed), "Where is my order 42?")
    assert executed == [("lookup_order", "42")]
    assert result.final_output == "Done: order 42: ships tomorrow" and upstream.chat.call_count == 2


@pytest.mark.parametrize("responses", [False, True], ids=["chat-completions", "responses-default-model"])
async def test_openai_agents_executes_the_refund_an_agent_edited(
    database_url: str,
    gateway: httpx.AsyncClient,
    api_key: str,
    senior: tuple[str, str],
    upstream: factories.UpstreamMock,
    responses: bool,
) -> None:
    """On Chat Completions, and on openai-agents' default model (the Responses API), whose second turn carries
    the call and its output as function_call and function_call_output items."""
    set_tracing_disabled(True)
    executed: list[tuple[str, Any]] = []
    agent = agent_with_tools(gateway, api_key, executed, responses=responses)
    run = asyncio.create_task(Runner.run(agent, "I want a refund for order 42."))
    await edit_when_held(database_url, gateway, senior, {"order_id": "42", "amount": 50})
    result = await asyncio.wait_for(run, 20)
    assert executed == [("issue_refund", 50)]  # the edited amount, never the model's 500
    assert result.final_output == "Done: refunded 50 on order 42"
    answered = {"role": "tool", "tool_call_id": "call_1", "content": "refunded 50 on order 42"}
    assert upstream.sent()["messages"][-1] == answered


# --- LangChain ----------------------------------------------------------------------------------------------


@tool
def issue_refund(order_id: str, amount: float) -> str:
    """Refund part of an order."""
    return "ok"


@tool
def lookup_order(order_id: str) -> str:
    """Look up where an order is."""
    return "ok"


def chat_model(gateway: httpx.AsyncClient, api_key: str, wait: float = 10, responses: bool = False) -> ChatOpenAI:
    return ChatOpenAI(
        use_responses_api=responses,
        base_url=BASE,
        api_key=api_key,  # type: ignore[arg-type]
        model=MODEL,
        http_async_client=gateway,
        max_retries=0,
        include_response_headers=True,
        extra_body={"hitl": {"wait": wait}},
    )


@pytest.mark.parametrize("responses", [False, True], ids=["chat-completions", "responses-api"])
async def test_langchain_bind_tools_released_and_held(
    database_url: str, gateway: httpx.AsyncClient, api_key: str, senior: tuple[str, str], responses: bool
) -> None:
    """On Chat Completions, and with `use_responses_api=True`."""
    llm = chat_model(gateway, api_key, responses=responses).bind_tools([issue_refund, lookup_order])
    released = await llm.ainvoke("Where is order 42?")
    assert [(call["name"], call["args"], call["id"]) for call in released.tool_calls] == [
        ("lookup_order", {"order_id": "42"}, "call_1")
    ]
    assert released.response_metadata["headers"]["x-hitl-status"] == "released"

    held = asyncio.create_task(llm.ainvoke("Refund order 42, please."))
    await edit_when_held(database_url, gateway, senior, {"order_id": "42", "amount": 50})
    edited = await asyncio.wait_for(held, 20)
    assert [(call["name"], call["args"]) for call in edited.tool_calls] == [
        ("issue_refund", {"order_id": "42", "amount": 50})
    ]
    assert edited.response_metadata["headers"]["x-hitl-status"] == "edited"


async def test_langchain_bind_tools_past_the_deadline_gets_a_refusal_it_can_see(
    gateway: httpx.AsyncClient, api_key: str
) -> None:
    llm = chat_model(gateway, api_key, wait=0).bind_tools([issue_refund])
    pending = await llm.ainvoke("Refund order 42, please.")
    headers = pending.response_metadata["headers"]
    assert pending.tool_calls == [] and pending.additional_kwargs["refusal"]  # never the unreviewed call
    assert headers["x-hitl-status"] == "pending" and headers["x-hitl-review-id"].startswith("rev-")


async def test_langchain_structured_output_released_held_and_refused(
    database_url: str, gateway: httpx.AsyncClient, api_key: str, agent: tuple[str, str]
) -> None:
    released = await chat_model(gateway, api_key).with_structured_output(City).ainvoke("Capital of France?")
    assert released == City(city="Paris", country="France")

    asking = asyncio.create_task(chat_model(gateway, api_key).with_structured_output(City).ainvoke("Unsure capital?"))
    await edit_when_held(database_url, gateway, agent, action="edit", text='{"city": "Paris", "country": "France"}')
    assert await asyncio.wait_for(asking, 20) == City(city="Paris", country="France")

    late = chat_model(gateway, api_key, wait=0).with_structured_output(City)
    with pytest.raises(OpenAIRefusalError):  # a clear refusal, not None or a parse failure
        await late.ainvoke("Unsure capital again?")


# --- LiteLLM's SDK as a client ------------------------------------------------------------------------------


async def test_litellm_sdk_as_a_client(
    database_url: str,
    refunds_app: FastAPI,
    api_key: str,
    upstream: factories.UpstreamMock,
    agent: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream.respond(scripted)
    upstream.pass_loopback()
    monkeypatch.setattr(litellm, "disable_aiohttp_transport", True)  # else respx never sees its calls
    with factories.serving(refunds_app) as base:
        ask = {"model": f"openai/{MODEL}", "api_base": f"{base}/v1", "api_key": api_key, "max_retries": 0}
        released = await litellm.acompletion(messages=[{"role": "user", "content": "Capital of France?"}], **ask)
        assert json.loads(released.choices[0].message.content) == {"city": "Paris", "country": "France"}
        assert released._hidden_params["additional_headers"]["llm_provider-x-hitl-status"] == "released"

        held = asyncio.create_task(
            litellm.acompletion(messages=[{"role": "user", "content": "Unsure capital?"}], extra_body=HOLD, **ask)
        )
        async with httpx.AsyncClient(base_url=base) as console:
            await edit_when_held(database_url, console, agent, action="override", text="Paris, France.")
        answer = await asyncio.wait_for(held, 20)
        assert answer.choices[0].message.content == "Paris, France."
        assert answer._hidden_params["additional_headers"]["llm_provider-x-hitl-status"] == "overridden"
