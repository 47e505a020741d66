"""A structured output asked as a tool call (LangChain's `with_structured_output(method="function_calling")`,
instructor's TOOLS mode, pydantic-ai's default output) is an answer: with the bundled policy it is scored by the
self-check judge, which reads the call against the tool's description, and held when the judge is unsure, never
released unscored. The exchange records which signals made its confidence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field
from sqlmodel import select

from gateway.app import create_app
from gateway.models import Exchange
from gateway.settings import SelfCheckSettings, Settings
from tests import factories
from tests.factories import MODEL, tool_call


class City(BaseModel):
    """A city and how many live there."""

    name: str
    population: int = Field(description="Inhabitants.")


def judged_by(verdict: float) -> Callable[[httpx.Request], httpx.Response]:
    """The upstream: asked for a City it calls the City tool; asked to judge, it says Yes with `verdict`."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "Proposed answer" in str(body["messages"][-1].get("content")):
            return httpx.Response(200, json=factories.judge_reply(yes=verdict))
        call = tool_call("City", {"name": "Paris", "population": 42})
        return httpx.Response(200, json=factories.completion_body(None, logprob=None, tool_calls=[call]))

    return answer


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    # The bundled policy, and the self-check on (the answering model judges itself here).
    app: FastAPI = create_app(make_settings(selfcheck=SelfCheckSettings(mode="grey_zone")))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


def city_model(gateway: httpx.AsyncClient, api_key: str) -> object:
    llm = ChatOpenAI(
        base_url="http://testserver/v1", api_key=api_key, model=MODEL, http_async_client=gateway,  # type: ignore[arg-type]
        max_retries=0, extra_body={"hitl": {"wait": 0}},
    )  # fmt: skip
    return llm.with_structured_output(City, method="function_calling")


CORRECTED = City(name="Paris", population=2_100_000)


async def correct_the_population(gateway: httpx.AsyncClient, database_url: str, senior: tuple[str, str]) -> None:
    """Once the unsure City is held, a senior edits the call's arguments to `CORRECTED`."""
    for _ in range(200):
        if factories.open_reviews(database_url):
            break
        await asyncio.sleep(0.05)
    (review_id,) = factories.open_reviews(database_url)
    token = await factories.aconsole_login(gateway, *senior)
    decided = await gateway.post(
        f"/console/reviews/{review_id}/decide",
        data={"action": "edit", "call": "call_1", "arguments": CORRECTED.model_dump_json(), "csrftoken": token},
    )
    assert decided.status_code == 303, decided.text


async def test_an_unsure_structured_output_is_held_not_released(
    gateway: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    upstream.respond(judged_by(0.2))
    # Held, and past its (zero) wait: a refusal with no tool call, so no object at all, never the unsure one.
    assert await city_model(gateway, api_key).ainvoke("Biggest French city?") is None  # type: ignore[attr-defined]
    asked = json.loads(upstream.chat.calls[0].request.content)
    assert asked["tool_choice"]["function"]["name"] == "City" and len(asked["tools"]) == 1
    judged = json.loads(upstream.chat.calls[1].request.content)["messages"][-1]["content"]
    assert "Call the tool `City` (A city and how many live there.)" in judged and '"population": 42' in judged
    with factories.sync_session(database_url) as session:
        (exchange,) = session.exec(select(Exchange)).all()
    assert exchange.status == "held" and exchange.confidence == pytest.approx(0.2, abs=0.01)
    assert exchange.signals["decided_by"] == "selfcheck" and "confidence 0.2" in exchange.reason


async def test_a_structured_output_the_judge_is_sure_of_is_released(
    gateway: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.respond(judged_by(0.99))
    city = await city_model(gateway, api_key).ainvoke("Biggest French city?")  # type: ignore[attr-defined]
    assert city == City(name="Paris", population=42)


async def test_instructor_gets_the_agents_correction_of_an_unsure_structured_output(
    gateway: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    senior: tuple[str, str],
    database_url: str,
) -> None:
    """instructor's TOOLS mode, held (for seniors: the judge is quite unsure) while a senior corrects the
    population; instructor validates what arrives."""
    import instructor
    from openai import AsyncOpenAI

    upstream.respond(judged_by(0.2))
    client = instructor.from_openai(
        AsyncOpenAI(base_url="http://testserver/v1", api_key=api_key, http_client=gateway, max_retries=0),
        mode=instructor.Mode.TOOLS,
    )

    async def ask() -> City:
        return await client.chat.completions.create(
            model=MODEL,
            response_model=City,
            max_retries=0,
            messages=[{"role": "user", "content": "Biggest French city?"}],
            extra_body={"hitl": {"wait": 20}},
        )

    asking = asyncio.ensure_future(ask())
    await correct_the_population(gateway, database_url, senior)
    city = await asking
    assert isinstance(city, City) and city.model_dump() == CORRECTED.model_dump()  # instructor subclasses City


def offered_tool_judged_by(verdict: float) -> Callable[[httpx.Request], httpx.Response]:
    """The upstream: it calls the one tool the request offers (pydantic-ai names its own); asked to judge, it
    says Yes with `verdict`."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "Proposed answer" in str(body["messages"][-1].get("content")):
            return httpx.Response(200, json=factories.judge_reply(yes=verdict))
        (tool,) = body["tools"]
        call = tool_call(tool["function"]["name"], {"name": "Paris", "population": 42})
        return httpx.Response(200, json=factories.completion_body(None, logprob=None, tool_calls=[call]))

    return answer


async def test_pydantic_ai_gets_the_agents_correction_of_an_unsure_structured_output(
    gateway: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    senior: tuple[str, str],
    database_url: str,
) -> None:
    """pydantic-ai's default output (a tool it forces) on its `openai:` model: held while the judge is unsure,
    a senior corrects the population, and the agent's validated output is the corrected City."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    upstream.respond(offered_tool_judged_by(0.2))
    provider = OpenAIProvider(base_url="http://testserver/v1", api_key=api_key, http_client=gateway)
    agent = Agent(OpenAIChatModel(MODEL, provider=provider), output_type=City, retries=0)
    asking = asyncio.ensure_future(
        agent.run("Biggest French city?", model_settings={"extra_body": {"hitl": {"wait": 20}}})
    )
    await correct_the_population(gateway, database_url, senior)
    asked = json.loads(upstream.chat.calls[0].request.content)
    assert asked["tool_choice"] == "required" and len(asked["tools"]) == 1  # a structured answer, not an action
    with factories.sync_session(database_url) as session:
        (exchange,) = session.exec(select(Exchange)).all()
    assert exchange.signals["decided_by"] == "selfcheck" and exchange.confidence == pytest.approx(0.2, abs=0.01)
    assert (await asking).output == CORRECTED


async def test_langchain_gets_the_agents_correction_of_an_unsure_structured_output(
    gateway: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    senior: tuple[str, str],
    database_url: str,
) -> None:
    """LangChain `with_structured_output(method="function_calling")` waiting on a held answer: the senior's
    corrected population is the object it parses."""
    upstream.respond(judged_by(0.2))
    llm = ChatOpenAI(
        base_url="http://testserver/v1", api_key=api_key, model=MODEL, http_async_client=gateway,  # type: ignore[arg-type]
        max_retries=0, extra_body={"hitl": {"wait": 20}},
    )  # fmt: skip
    asking = asyncio.ensure_future(
        llm.with_structured_output(City, method="function_calling").ainvoke("Biggest French city?")
    )
    await correct_the_population(gateway, database_url, senior)
    assert await asking == CORRECTED


async def test_pydantic_ai_on_its_default_responses_model_gets_the_agents_correction(
    gateway: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    senior: tuple[str, str],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pydantic-ai's `openai:` models speak the Responses API: the same held City, corrected by a senior, reaches
    the agent as its validated output through `POST /v1/responses`."""
    from pydantic_ai import Agent
    from pydantic_ai.models import infer_model
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    monkeypatch.setenv("OPENAI_API_KEY", api_key)
    assert isinstance(infer_model(f"openai:{MODEL}"), OpenAIResponsesModel)  # what `openai:` means
    upstream.respond(offered_tool_judged_by(0.2))
    provider = OpenAIProvider(base_url="http://testserver/v1", api_key=api_key, http_client=gateway)
    agent = Agent(OpenAIResponsesModel(MODEL, provider=provider), output_type=City, retries=0)
    asking = asyncio.ensure_future(
        agent.run("Biggest French city?", model_settings={"extra_body": {"hitl": {"wait": 20}}})
    )
    await correct_the_population(gateway, database_url, senior)
    asked = json.loads(upstream.chat.calls[0].request.content)
    assert asked["tool_choice"] == "required" and len(asked["tools"]) == 1
    with factories.sync_session(database_url) as session:
        (exchange,) = session.exec(select(Exchange)).all()
    assert exchange.dialect == "responses" and exchange.signals["decided_by"] == "selfcheck"
    assert (await asking).output == CORRECTED
