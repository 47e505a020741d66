"""Anthropic Messages through the gateway, with the anthropic SDK as apps use it (`messages.create`, `.stream`;
its key sent as `x-api-key`), against a gateway on a real port (the SDK speaks httpx2): the same scoring, policy
and review as every dialect, answers and errors in Anthropic's shape, a held answer's text never out before its
decision, an edited `tool_use` back with its id."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import Settings
from tests import factories
from tests.factories import HOLD_TOOL_CALLS, MODEL, REFUND_PARAMETERS, tool_call

CONFIDENT = factories.completion_body("Paris is the capital of France.", logprob=-0.001)
UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)
REFUND = {
    "name": "issue_refund",
    "description": "Refund an order.",
    "input_schema": REFUND_PARAMETERS,
}


@pytest.fixture
def gateway(app: FastAPI, upstream: factories.UpstreamMock) -> Iterator[str]:
    upstream.pass_loopback()  # the console's decisions go to the gateway's real port
    with factories.serving(app) as base:
        yield base


_opened: list[anthropic.Anthropic] = []


def claude(base: str, key: str) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    _opened.append(client)
    return client


@pytest.fixture(autouse=True)
def closed_clients() -> Iterator[None]:
    """Every SDK client a test opened is closed with it (its pool's sockets too)."""
    yield
    while _opened:
        _opened.pop().close()


def decide(base: str, who: tuple[str, str], database_url: str, **form: str) -> str:
    """Wait for the held review, then decide it through the console, as an agent would."""
    factories.until(lambda: bool(factories.open_reviews(database_url)), 30, "a held review")
    (review_id,) = factories.open_reviews(database_url)
    with httpx.Client(base_url=base, timeout=30) as console:
        token = factories.csrf_token(console.get("/console/login").text)
        login = {"username": who[0], "password": who[1], "csrftoken": token, "next": "/console/"}
        assert console.post("/console/login", data=login).status_code == 303
        decided = console.post(f"/console/reviews/{review_id}/decide", data={"csrftoken": token, **form})
        assert decided.status_code == 303, decided.text
    return review_id


def test_a_confident_answer_is_released_as_a_message(
    gateway: str, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    raw = claude(gateway, api_key).messages.with_raw_response.create(
        model=MODEL, max_tokens=100, system="Answer in one sentence.",
        messages=[{"role": "user", "content": "Capital of France?"}],
    )  # fmt: skip
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "Paris is the capital of France."
    assert message.stop_reason == "end_turn" and message.id.startswith("msg_")
    assert raw.headers["x-hitl-status"] == "released"
    sent = upstream.sent()  # the upstream, which speaks chat completions, got the translated request
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert sent["max_tokens"] == 100 and "system" not in sent


def test_a_held_answer_past_its_deadline_sends_nothing_of_the_candidate(
    gateway: str, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(UNSURE)
    ask = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Capital of France?"}]}
    raw = claude(gateway, api_key).messages.with_raw_response.create(**ask, extra_headers={"x-hitl-wait": "0"})
    assert raw.headers["x-hitl-status"] == "pending" and "Lyon" not in raw.http_response.text
    assert raw.parse().content[0].text and raw.headers["x-hitl-review-id"].startswith("rev-")
    with claude(gateway, api_key).messages.stream(**ask, extra_headers={"x-hitl-wait": "0"}) as stream:
        streamed = "".join(stream.text_stream)
    assert "Lyon" not in streamed and streamed


def test_a_stream_is_anthropics_event_sequence(gateway: str, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.answer(CONFIDENT)
    ask = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Capital of France?"}]}
    with claude(gateway, api_key).messages.stream(**ask) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].text == "Paris is the capital of France." and final.stop_reason == "end_turn"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds


def test_a_waiting_client_gets_the_agents_edit(
    gateway: str, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str], database_url: str
) -> None:
    upstream.answer(UNSURE)
    got: dict[str, Any] = {}
    ask = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Capital?"}]}
    waiting = threading.Thread(
        target=lambda: got.update(
            message=claude(gateway, api_key).messages.create(**ask, extra_body={"hitl": {"wait": 20}})
        )
    )
    waiting.start()
    decide(gateway, senior, database_url, action="edit", text="Paris.")
    waiting.join(20)
    assert got["message"].content[0].text == "Paris." and got["message"].model_extra["hitl"]["status"] == "edited"


@pytest.fixture
def tool_gateway(
    make_settings: Callable[..., Settings], tmp_path: Path, upstream: factories.UpstreamMock
) -> Iterator[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(HOLD_TOOL_CALLS)
    upstream.pass_loopback()
    with factories.serving(create_app(make_settings(policy_path=policy))) as base:
        yield base


def test_an_edited_tool_use_arrives_with_its_id(
    tool_gateway: str, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], database_url: str
) -> None:
    call = tool_call("issue_refund", {"order_id": "42", "amount": 900}, call_id="toolu_refund")
    upstream.answer(factories.completion_body(None, logprob=None, tool_calls=[call]))
    got: dict[str, Any] = {}
    ask = {"model": MODEL, "max_tokens": 100, "tools": [REFUND],
           "messages": [{"role": "user", "content": "Refund order 42"}]}  # fmt: skip

    def create() -> None:
        with claude(tool_gateway, api_key).messages.stream(**ask, extra_body={"hitl": {"wait": 20}}) as stream:
            got["message"] = stream.get_final_message()

    waiting = threading.Thread(target=create)
    waiting.start()
    edited = json.dumps({"order_id": "42", "amount": 90})
    decide(tool_gateway, agent, database_url, action="edit", call="toolu_refund", arguments=edited)
    waiting.join(20)
    (block,) = got["message"].content
    assert block.type == "tool_use" and block.id == "toolu_refund" and block.name == "issue_refund"
    assert block.input == {"order_id": "42", "amount": 90} and got["message"].stop_reason == "tool_use"
    function = {"name": "issue_refund", "parameters": REFUND["input_schema"], "description": "Refund an order."}
    assert upstream.sent()["tools"] == [{"type": "function", "function": function}]


def test_tool_results_and_earlier_tool_uses_become_the_conversation(
    gateway: str, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    turns: list[Any] = [
        {"role": "user", "content": "Refund order 42"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Refunding."},
            {"type": "tool_use", "id": "toolu_1", "name": "issue_refund", "input": {"order_id": "42"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "refunded"},
            {"type": "text", "text": "Thanks, and?"},
        ]},
    ]  # fmt: skip
    claude(gateway, api_key).messages.create(model=MODEL, max_tokens=50, messages=turns, tools=[REFUND])
    assert upstream.sent()["messages"] == [
        {"role": "user", "content": "Refund order 42"},
        {
            "role": "assistant",
            "content": "Refunding.",
            "tool_calls": [tool_call("issue_refund", {"order_id": "42"}, "toolu_1")],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "refunded"},
        {"role": "user", "content": "Thanks, and?"},
    ]


def test_errors_are_in_anthropics_shape(gateway: str, api_key: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude(gateway, api_key).messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],  # type: ignore[list-item]
        )  # fmt: skip
    assert bad.value.body["type"] == "error" and bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError) as refused:
        claude(gateway, "hitl-not-a-key").messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    unknown = httpx.post(f"{gateway}/v1/messages/count_tokens", headers={"x-api-key": api_key}, json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    assert "POST /v1/messages" in unknown.json()["error"]["message"]  # it names what is served
