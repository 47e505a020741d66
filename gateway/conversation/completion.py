"""The completions a client receives: released, decided, or the placeholder of a pending review,
as one JSON body or replayed as OpenAI SSE chunks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from gateway.conversation import wire
from gateway.conversation.chat import ChatRequest


def _client_logprobs(logprobs: Any, request: ChatRequest) -> Any:
    """What the client asked for: the gateway always asks for top-5, the client may not have."""
    if not request.logprobs or not isinstance(logprobs, dict):
        return None
    keep = request.top_logprobs or 0
    tokens = logprobs.get("content") or []
    if all(len(token.get("top_logprobs") or ()) <= keep for token in tokens):
        return logprobs  # the client asked for as many as there are: nothing to trim, nothing to copy
    content = [{**token, "top_logprobs": (token.get("top_logprobs") or [])[:keep]} for token in tokens]
    return {**logprobs, "content": content}


def _completion(
    upstream: dict[str, Any],
    request: ChatRequest,
    exchange_id: str,
    choices: list[dict[str, Any]],
    hitl: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": exchange_id,
        "object": "chat.completion",
        "created": int(upstream.get("created") or time.time()),
        "model": request.model,
        "system_fingerprint": upstream.get("system_fingerprint"),
        "choices": choices,
        "usage": upstream.get("usage"),
        "hitl": hitl,
    }


def for_client(upstream: dict[str, Any], request: ChatRequest) -> dict[str, Any]:
    """The upstream's answer with only the logprobs the client asked for (none, or its `top_logprobs`); what a
    released answer needs kept to be sent again, byte for byte (a retry's replay). When the client takes every
    choice's logprobs as they are, the answer itself, choices and all (nothing copied: their JSON, once written,
    is reused)."""
    kept = [_client_logprobs(choice.get("logprobs"), request) for choice in upstream["choices"]]
    unchanged = zip(upstream["choices"], kept, strict=True)
    if all("logprobs" in choice and ours is choice["logprobs"] for choice, ours in unchanged):
        return upstream
    choices = [{**choice, "logprobs": ours} for choice, ours in zip(upstream["choices"], kept, strict=True)]
    return {**upstream, "choices": choices}


def as_released(
    upstream: dict[str, Any], request: ChatRequest, exchange_id: str, hitl: dict[str, Any]
) -> dict[str, Any]:
    """The upstream's answer, unchanged but for the gateway's id, the client's model name and logprobs."""
    choices = upstream["choices"]
    if not isinstance(choices, wire.Written):  # those of an answer released at once were made for this client
        choices = for_client(upstream, request)["choices"]
    return _completion(upstream, request, exchange_id, choices, hitl)


def _one_choice(
    upstream: dict[str, Any],
    request: ChatRequest,
    exchange_id: str,
    message: dict[str, Any],
    hitl: dict[str, Any],
    finish_reason: str = "stop",
) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "logprobs": None, "finish_reason": finish_reason}
    return _completion(upstream, request, exchange_id, [choice], hitl)


def with_text(
    upstream: dict[str, Any], request: ChatRequest, exchange_id: str, text: str, hitl: dict[str, Any]
) -> dict[str, Any]:
    """One choice carrying text the model did not write (an agent's, or the placeholder)."""
    return _one_choice(upstream, request, exchange_id, {"content": text, "refusal": None}, hitl)


def with_refusal(
    upstream: dict[str, Any], request: ChatRequest, exchange_id: str, refusal: str, hitl: dict[str, Any]
) -> dict[str, Any]:
    """One choice that declines, OpenAI-style: `content` null and the reason in `refusal`, so the SDK's
    `parse()` hands the caller `.refusal` instead of failing to parse a placeholder as JSON."""
    return _one_choice(upstream, request, exchange_id, {"content": None, "refusal": refusal}, hitl)


def with_tool_calls(
    upstream: dict[str, Any], request: ChatRequest, exchange_id: str, calls: list[Any], hitl: dict[str, Any]
) -> dict[str, Any]:
    """The candidate's first choice with an agent's tool calls in place of the model's (same ids), and
    whatever text the model wrote beside them."""
    first = (upstream.get("choices") or [{}])[0].get("message") or {}
    message = {"content": first.get("content"), "refusal": None, "tool_calls": calls}
    return _one_choice(upstream, request, exchange_id, message, hitl, finish_reason="tool_calls")


def chunks(completion: dict[str, Any], include_usage: bool, after: str | None = None) -> Iterator[dict[str, Any]]:
    """Replay a finished completion as `chat.completion.chunk` objects, as OpenAI streams them; `after` is the
    text a progressive stream has sent already (its role chunk too), so only the rest follows."""
    base = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    base["hitl"] = completion["hitl"]
    if include_usage:
        base["usage"] = None

    def chunk(index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    for choice in completion["choices"]:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        content, logprobs = message.get("content"), choice.get("logprobs")
        if after is None:
            yield chunk(index, {"role": "assistant", "content": ""})
        elif content:  # the rest of the decided text; a text that does not go on from what was sent follows it
            content, logprobs = content.removeprefix(after), None
        if content:
            yield chunk(index, {"content": content}, logprobs)
        if message.get("refusal"):
            yield chunk(index, {"refusal": message["refusal"]})
        for position, call in enumerate(message.get("tool_calls") or []):
            yield chunk(index, {"tool_calls": [{"index": position, **call}]})
        yield chunk(index, {}, finish=choice.get("finish_reason") or "stop")
    if include_usage:
        yield {**base, "choices": [], "usage": completion.get("usage")}


def chunk_of(head: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """One `chat.completion.chunk` of an answer still being released (`head`: its id, created and model)."""
    return {**head, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}  # fmt: skip
