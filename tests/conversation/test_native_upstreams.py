"""Upstreams that speak the Responses API or Anthropic Messages natively (`api`), against a respx-mocked server:
the conversation goes out in the upstream's own words (logprobs asked for the Responses way, the key the
Anthropic way) and the reply comes back as the chat completion scoring reads, tool call ids and logprobs kept;
streamed, event by event, it puts together to the same answer as unstreamed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.conversation.chunks import Assembled
from gateway.conversation.messages_upstream import completion as messages_completion
from gateway.conversation.responses_upstream import completion
from gateway.conversation.upstream import LiteLLM, OpenAICompatible
from gateway.errors import InvalidRequest, UpstreamError
from gateway.settings import UpstreamSettings
from tests import factories
from tests.factories import UPSTREAM

LOOKUP = factories.tool_call("lookup", {"order": "42"}, "call_a")
CONVERSATION: dict[str, Any] = {
    "model": "support-bot",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Refund order 42."},
        {"role": "assistant", "content": None, "tool_calls": [LOOKUP]},
        {"role": "tool", "tool_call_id": "call_a", "content": "paid 90 EUR"},
        {"role": "user", "content": [{"type": "text", "text": "And this? "},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
    ],
    "tools": [{"type": "function", "function": {"name": "issue_refund", "description": "Refund an order.",
                                                "parameters": factories.REFUND_PARAMETERS}}],
    "tool_choice": "required",
    "max_tokens": 200,
    "temperature": 0.2,
    "logprobs": True,
    "top_logprobs": 5,
    "hitl": {"wait": 3},
    "stream": True,
}  # fmt: skip

RESPONSE = {
    "id": "resp_abc",
    "object": "response",
    "created_at": 1764800000,
    "status": "completed",
    "model": "gpt-5-mini",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
            {"type": "output_text", "text": "Refunding.", "annotations": [], "logprobs": [
                {"token": "Ref", "logprob": -0.01, "bytes": [82, 101, 102],
                 "top_logprobs": [{"token": "Ref", "logprob": -0.01, "bytes": [82, 101, 102]},
                                  {"token": "I", "logprob": -4.6, "bytes": [73]}]},
                {"token": "unding.", "logprob": -0.2, "bytes": None, "top_logprobs": []}]}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_b", "name": "issue_refund",
         "arguments": '{"order_id": "42", "amount": 90}', "status": "completed"},
    ],
    "usage": {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42},
}  # fmt: skip

MESSAGE = {
    "id": "msg_01abc",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "text", "text": "I'll refund it."},
        {"type": "tool_use", "id": "toolu_01", "name": "issue_refund", "input": {"order_id": "42", "amount": 90}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 25, "output_tokens": 15},
}


def adapter(client: httpx.AsyncClient, api: str, **extra: Any) -> OpenAICompatible:
    config = UpstreamSettings(name="support-bot", model="upstream-model", api_base=UPSTREAM, api_key="sk-up", api=api)
    return OpenAICompatible(config.model_copy(update=extra), client)


async def test_a_responses_upstream_is_asked_natively_with_logprobs_included(
    upstream: factories.UpstreamMock,
) -> None:
    route = upstream.router.post("/responses").mock(return_value=httpx.Response(200, json=RESPONSE))
    async with httpx.AsyncClient() as client:
        completion = await adapter(client, "responses").complete(CONVERSATION)
    sent = json.loads(route.calls.last.request.content)
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-up"
    assert sent["model"] == "upstream-model" and sent["store"] is False
    assert sent["include"] == ["message.output_text.logprobs"] and sent["top_logprobs"] == 5
    assert sent["instructions"] == "Be brief." and sent["max_output_tokens"] == 200 and sent["temperature"] == 0.2
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": "Refund order 42."},
        {"type": "function_call", "call_id": "call_a", "name": "lookup", "arguments": '{"order": "42"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "paid 90 EUR"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "And this? "},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "auto"}]},
    ]  # fmt: skip
    assert sent["tools"] == [{"type": "function", "name": "issue_refund", "description": "Refund an order.",
                              "parameters": factories.REFUND_PARAMETERS}]  # fmt: skip
    assert sent["tool_choice"] == "required"
    assert not {"hitl", "stream", "messages", "logprobs", "max_tokens"} & set(sent)

    (choice,) = completion["choices"]
    assert choice["message"]["content"] == "Refunding." and choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "call_b" and json.loads(call["function"]["arguments"]) == {"order_id": "42", "amount": 90}
    first, second = choice["logprobs"]["content"]
    assert first["logprob"] == -0.01 and [t["token"] for t in first["top_logprobs"]] == ["Ref", "I"]
    assert second["logprob"] == -0.2
    assert completion["usage"] == {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}


async def test_a_responses_upstream_maps_structured_output_and_a_forced_function(
    upstream: factories.UpstreamMock,
) -> None:
    route = upstream.router.post("/responses").mock(return_value=httpx.Response(200, json=RESPONSE))
    schema = {"name": "Answer", "schema": {"type": "object"}, "strict": True}
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": schema},
        "tool_choice": {"type": "function", "function": {"name": "issue_refund"}},
        "max_tokens": 1,
    }
    async with httpx.AsyncClient() as client:
        await adapter(client, "responses").complete(body)
    sent = json.loads(route.calls.last.request.content)
    assert sent["text"] == {"format": {"type": "json_schema", **schema}}
    assert sent["max_output_tokens"] == 16  # a one-token judge: the API's least
    assert sent["tool_choice"] == {"type": "function", "name": "issue_refund"}
    assert "include" not in sent and "instructions" not in sent


@pytest.mark.parametrize(
    ("reply", "finish", "refusal"),
    [
        ({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}, "length", None),
        (
            {"output": [{"type": "message", "content": [{"type": "refusal", "refusal": "I can't."}]}]},
            "stop",
            "I can't.",
        ),
    ],
)
async def test_a_responses_upstream_keeps_an_incomplete_answer_and_a_refusal(
    upstream: factories.UpstreamMock, reply: dict[str, Any], finish: str, refusal: str | None
) -> None:
    upstream.router.post("/responses").mock(return_value=httpx.Response(200, json={**RESPONSE, **reply}))
    async with httpx.AsyncClient() as client:
        completion = await adapter(client, "responses").complete({"messages": [{"role": "user", "content": "hi"}]})
    choice = completion["choices"][0]
    assert choice["message"]["refusal"] == refusal
    assert choice["finish_reason"] == finish


@pytest.mark.parametrize(
    ("reply", "error", "says"),
    [
        ({**RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "overloaded"}}, UpstreamError,
         "overloaded"),
        ({"id": "resp_x", "object": "response"}, UpstreamError, "without output"),
        ({**RESPONSE, "output": ["text"]}, UpstreamError, "not an object"),
    ],
)  # fmt: skip
async def test_a_responses_upstream_that_fails_or_answers_nonsense_is_an_upstream_error(
    upstream: factories.UpstreamMock, reply: dict[str, Any], error: type[Exception], says: str
) -> None:
    upstream.router.post("/responses").mock(return_value=httpx.Response(200, json=reply))
    async with httpx.AsyncClient() as client:
        with pytest.raises(error, match=says):
            await adapter(client, "responses").complete({"messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize(
    ("api", "field", "value"),
    [("responses", "stop", ["\n"]), ("responses", "seed", 7), ("responses", "n", 2),
     ("messages", "response_format", {"type": "json_object"}), ("messages", "presence_penalty", 0.5),
     ("messages", "n", 3)],
)  # fmt: skip
async def test_what_the_upstreams_api_has_no_place_for_is_refused_before_it_is_asked(
    upstream: factories.UpstreamMock, api: str, field: str, value: Any
) -> None:
    route = upstream.router.post(f"/{api}")
    async with httpx.AsyncClient() as client:
        with pytest.raises(InvalidRequest) as raised:
            await adapter(client, api).complete({"messages": [{"role": "user", "content": "hi"}], field: value})
    assert raised.value.param == field and not route.called


async def test_a_messages_upstream_is_asked_the_anthropic_way(upstream: factories.UpstreamMock) -> None:
    route = upstream.router.post("/messages").mock(return_value=httpx.Response(200, json=MESSAGE))
    async with httpx.AsyncClient() as client:
        model = adapter(client, "messages")
        completion = await model.complete({**CONVERSATION, "stop": "END", "parallel_tool_calls": False,
                                           "metadata": {"user_id": "customer-7"}})  # fmt: skip
    assert model.logprobs is False and model.provider == "anthropic"
    request = route.calls.last.request
    assert request.headers["x-api-key"] == "sk-up" and request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    sent = json.loads(request.content)
    assert sent["model"] == "upstream-model" and sent["system"] == "Be brief." and sent["max_tokens"] == 200
    assert sent["stop_sequences"] == ["END"] and sent["metadata"] == {"user_id": "customer-7"}
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Refund order 42."}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_a", "name": "lookup", "input": {"order": "42"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_a", "content": "paid 90 EUR"},
            {"type": "text", "text": "And this? "},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
    ]  # fmt: skip
    assert sent["tools"] == [{"name": "issue_refund", "input_schema": factories.REFUND_PARAMETERS,
                              "description": "Refund an order."}]  # fmt: skip
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert not {"hitl", "stream", "logprobs", "top_logprobs"} & set(sent)

    (choice,) = completion["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["logprobs"] is None
    assert choice["message"]["content"] == "I'll refund it."
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01" and json.loads(call["function"]["arguments"]) == {"order_id": "42", "amount": 90}
    assert completion["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


async def test_a_messages_upstream_without_a_limit_gets_the_default_and_its_refusal_is_kept(
    upstream: factories.UpstreamMock,
) -> None:
    refused = {**MESSAGE, "content": [{"type": "text", "text": "I can't help with that."}], "stop_reason": "refusal"}
    route = upstream.router.post("/messages").mock(return_value=httpx.Response(200, json=refused))
    async with httpx.AsyncClient() as client:
        completion = await adapter(client, "messages").complete({"messages": [{"role": "user", "content": "hi"}]})
    assert json.loads(route.calls.last.request.content)["max_tokens"] == 4096
    message = completion["choices"][0]["message"]
    assert message["refusal"] == "I can't help with that." and message["content"] is None
    assert completion["choices"][0]["finish_reason"] == "content_filter"


async def test_a_messages_upstreams_error_is_read_from_anthropics_shape(upstream: factories.UpstreamMock) -> None:
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too large"}}
    upstream.router.post("/messages").mock(return_value=httpx.Response(400, json=error))
    async with httpx.AsyncClient() as client:
        with pytest.raises(InvalidRequest, match="max_tokens: too large"):
            await adapter(client, "messages").complete({"messages": [{"role": "user", "content": "hi"}]})


def test_only_an_http_upstream_can_speak_another_api() -> None:
    with pytest.raises(ValueError, match="api 'messages' is spoken over provider 'openai' only"):
        UpstreamSettings(name="claude", provider="litellm", model="anthropic/claude-sonnet-4-5", api="messages")


async def test_claude_through_litellm_is_asked_on_anthropics_messages_api(upstream: factories.UpstreamMock) -> None:
    import litellm

    litellm.disable_aiohttp_transport = True  # else respx never sees litellm's calls
    route = upstream.router.post("/messages").mock(return_value=httpx.Response(200, json=MESSAGE))
    claude = LiteLLM(
        UpstreamSettings(name="claude", provider="litellm", model="anthropic/claude-sonnet-4-5",
                         api_base=UPSTREAM.removesuffix("/v1"), api_key="sk-ant", logprobs=False)
    )  # fmt: skip
    completion = await claude.complete({**CONVERSATION, "logprobs": False, "top_logprobs": None})
    request = route.calls.last.request
    assert request.headers["x-api-key"] == "sk-ant" and "anthropic-version" in request.headers
    sent = json.loads(request.content)
    assert sent["model"] == "claude-sonnet-4-5" and sent["system"][0]["text"] == "Be brief."
    (call,) = completion["choices"][0]["message"]["tool_calls"]
    assert call["id"] == "toolu_01" and json.loads(call["function"]["arguments"]) == {"order_id": "42", "amount": 90}


async def streamed(model: OpenAICompatible | LiteLLM, body: dict[str, Any]) -> dict[str, Any]:
    """The completion the gateway puts together from the upstream's stream, as it reads every streamed answer."""
    assembled = Assembled(model.name)
    async for chunk in model.stream(body):
        assembled.add(chunk)
    return assembled.completion()


def same_answer(streamed: dict[str, Any], whole: dict[str, Any]) -> None:
    (got,), (expected,) = streamed["choices"], whole["choices"]
    for call in [*got["message"].get("tool_calls", []), *expected["message"].get("tool_calls", [])]:
        call["function"]["arguments"] = json.loads(call["function"]["arguments"])  # the same JSON, however spaced
    assert got == expected and streamed["usage"] == whole["usage"] and streamed["id"] == whole["id"]


def event_stream(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


async def test_a_responses_upstream_streams_its_answer_with_the_logprobs_of_each_delta(
    upstream: factories.UpstreamMock,
) -> None:
    route = upstream.router.post("/responses").mock(return_value=event_stream(factories.responses_stream_of(RESPONSE)))
    async with httpx.AsyncClient() as client:
        model = adapter(client, "responses")
        answer = await streamed(model, CONVERSATION)
    sent = json.loads(route.calls.last.request.content)
    assert model.streams and sent["stream"] is True and "stream_options" not in sent  # not a Responses field
    assert sent["include"] == ["message.output_text.logprobs"] and sent["top_logprobs"] == 5
    same_answer(answer, completion(RESPONSE, "support-bot"))
    assert [t["token"] for t in answer["choices"][0]["logprobs"]["content"]] == ["Ref", "unding."]


async def test_a_messages_upstream_streams_its_text_and_tool_use(upstream: factories.UpstreamMock) -> None:
    route = upstream.router.post("/messages").mock(return_value=event_stream(factories.messages_stream_of(MESSAGE)))
    async with httpx.AsyncClient() as client:
        answer = await streamed(adapter(client, "messages"), CONVERSATION)
    sent = json.loads(route.calls.last.request.content)
    assert sent["stream"] is True and "stream_options" not in sent
    same_answer(answer, messages_completion(MESSAGE, "support-bot"))


@pytest.mark.parametrize(
    "ending",
    [
        {**RESPONSE, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
        {**RESPONSE, "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                                 "content": [{"type": "refusal", "refusal": "I can't help with that."}]}]},
        {**RESPONSE, "output": RESPONSE["output"][2:]},  # a forced function call, no text
    ],
    ids=["incomplete", "refusal", "function-only"],
)  # fmt: skip
async def test_a_streamed_response_ends_as_its_unstreamed_twin(
    upstream: factories.UpstreamMock, ending: dict[str, Any]
) -> None:
    upstream.router.post("/responses").mock(return_value=event_stream(factories.responses_stream_of(ending)))
    async with httpx.AsyncClient() as client:
        answer = await streamed(adapter(client, "responses"), CONVERSATION)
    same_answer(answer, completion(ending, "support-bot"))


@pytest.mark.parametrize(
    "message",
    [
        {**MESSAGE, "content": [{"type": "text", "text": "Long"}], "stop_reason": "max_tokens"},
        {**MESSAGE, "content": [{"type": "tool_use", "id": "toolu_02", "name": "ping", "input": {}}]},
    ],
    ids=["max_tokens", "tool-without-input"],
)
async def test_a_streamed_message_ends_as_its_unstreamed_twin(
    upstream: factories.UpstreamMock, message: dict[str, Any]
) -> None:
    upstream.router.post("/messages").mock(return_value=event_stream(factories.messages_stream_of(message)))
    async with httpx.AsyncClient() as client:
        answer = await streamed(adapter(client, "messages"), CONVERSATION)
    same_answer(answer, messages_completion(message, "support-bot"))


FAILED = {**RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "overloaded"}}
_CUT_RESPONSE = factories.responses_stream_of(RESPONSE).split(b"event: response.output_item.done")[0]
_CUT_MESSAGE = factories.messages_stream_of(MESSAGE).split(b"event: message_delta")[0]
_OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.mark.parametrize(
    ("api", "body", "says"),
    [
        ("responses", factories.responses_stream_of(FAILED), "failed the response: overloaded"),
        ("responses", _CUT_RESPONSE + factories.sse([{"type": "error", "code": "server_error", "message": "gone"}]),
         "failed the response: gone"),
        ("responses", _CUT_RESPONSE, "ended its stream before finishing"),
        ("responses", b"event: response.created\ndata: [1, 2]\n\n", "not an object"),
        ("messages", _CUT_MESSAGE + factories.sse([_OVERLOADED]), "failed the message: Overloaded"),
        ("messages", _CUT_MESSAGE, "ended its stream before finishing"),
        ("messages", _CUT_MESSAGE + factories.sse([{"type": "content_block_stop", "index": "1"}]), "without an index"),
    ],
    ids=["responses-failed", "responses-error", "responses-cut", "responses-nonsense", "messages-error",
         "messages-cut", "messages-nonsense"],
)  # fmt: skip
async def test_a_native_stream_that_fails_or_stops_short_is_an_upstream_error(
    upstream: factories.UpstreamMock, api: str, body: bytes, says: str
) -> None:
    upstream.router.post(f"/{api}").mock(return_value=event_stream(body))
    async with httpx.AsyncClient() as client:
        with pytest.raises(UpstreamError, match=says):
            await streamed(adapter(client, api), CONVERSATION)


async def test_claude_through_litellm_streams_when_asked(upstream: factories.UpstreamMock) -> None:
    import litellm

    litellm.disable_aiohttp_transport = True  # else respx never sees litellm's calls
    route = upstream.router.post("/messages").mock(return_value=event_stream(factories.messages_stream_of(MESSAGE)))
    claude = LiteLLM(
        UpstreamSettings(name="claude", provider="litellm", model="anthropic/claude-sonnet-4-5",
                         api_base=UPSTREAM.removesuffix("/v1"), api_key="sk-ant", logprobs=False)
    )  # fmt: skip
    answer = await streamed(claude, {**CONVERSATION, "logprobs": False, "top_logprobs": None})
    assert claude.streams and json.loads(route.calls.last.request.content)["stream"] is True
    (choice,) = answer["choices"]
    assert choice["message"]["content"] == "I'll refund it." and choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01" and json.loads(call["function"]["arguments"]) == {"order_id": "42", "amount": 90}
    assert answer["usage"]["completion_tokens"] == 15


async def test_a_litellm_stream_that_fails_is_an_upstream_error(upstream: factories.UpstreamMock) -> None:
    import litellm

    litellm.disable_aiohttp_transport = True
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.router.post("/messages").mock(return_value=httpx.Response(529, json=error))
    claude = LiteLLM(
        UpstreamSettings(name="claude", provider="litellm", model="anthropic/claude-sonnet-4-5",
                         api_base=UPSTREAM.removesuffix("/v1"), api_key="sk-ant", logprobs=False, timeout=5)
    )  # fmt: skip
    with pytest.raises(UpstreamError, match="Overloaded"):
        await streamed(claude, {"messages": [{"role": "user", "content": "hi"}], "max_retries": 0})
