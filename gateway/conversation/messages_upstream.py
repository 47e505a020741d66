"""Anthropic Messages spoken to an upstream: the conversation (a chat-completions request) as a `POST /messages`
body, and the upstream's Message back as the chat completion every other part of the gateway reads.

The Messages API has no logprobs, so an upstream that speaks it is scored by the self-check and consistency. A
chat field it has no place for (a structured-output schema, `n`, penalties, a seed) is refused by name, never
silently dropped.
"""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.conversation.messages import PREFIX
from gateway.errors import InvalidRequest, UpstreamError

VERSION = "2023-06-01"  # the `anthropic-version` every Messages server accepts
DEFAULT_MAX_TOKENS = 4096  # the API requires a limit; a chat client may send none
_SAME = ("temperature", "top_p", "top_k")
_NO_PLACE = ("response_format", "seed", "frequency_penalty", "presence_penalty", "logit_bias", "audio", "modalities")
_FINISH = {"max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


def _unsupported(name: str) -> InvalidRequest:
    return InvalidRequest(
        f"`{name}` cannot be sent to this model: its upstream speaks Anthropic Messages, which has no such parameter.",
        param=name,
        code="unsupported_parameter",
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content or [] if isinstance(part, dict))


def _image(part: dict[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url.removeprefix("data:").split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if message.get("role") == "tool":
        return [{"type": "tool_result", "tool_use_id": message.get("tool_call_id"), "content": _text(content)}]
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str) and content:
        blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                blocks.append(_image(part))
            elif isinstance(part, dict) and part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            raise InvalidRequest(
                "An assistant tool call's arguments are not JSON, which Anthropic Messages requires.",
                param=f"messages.tool_calls[{index}].function.arguments",
            ) from None
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments})
    return blocks


def _turns(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """The system prompt (every system message, in order) and the turns; tool results are a user turn, and
    consecutive turns of one role are one turn, as the API expects them."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            system.append(_text(message.get("content")))
            continue
        role = "assistant" if message.get("role") == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return ("\n\n".join(system) or None), turns


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    shaped = {"name": function.get("name"), "input_schema": function.get("parameters") or {"type": "object"}}
    if function.get("description"):
        shaped["description"] = function["description"]
    return shaped


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        shaped = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        shaped = {"type": {"required": "any", "none": "none"}.get(str(choice), "auto")}
    if parallel is False and shaped["type"] != "none":
        shaped["disable_parallel_tool_use"] = True
    return shaped


def request(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """The conversation as the Messages request an upstream that speaks it natively is sent."""
    for name in _NO_PLACE:
        if chat.get(name) is not None:
            raise _unsupported(name)
    if chat.get("n", 1) != 1:
        raise InvalidRequest("This model answers one choice per request: use n=1.", param="n")
    system, turns = _turns(list(chat.get("messages") or []))
    limit = chat.get("max_completion_tokens", chat.get("max_tokens"))
    body: dict[str, Any] = {"model": model, "messages": turns, "max_tokens": limit or DEFAULT_MAX_TOKENS}
    body.update({key: chat[key] for key in _SAME if key in chat})
    if system is not None:
        body["system"] = system
    if chat.get("stop") is not None:
        body["stop_sequences"] = [chat["stop"]] if isinstance(chat["stop"], str) else list(chat["stop"])
    if chat.get("tools") and chat.get("tool_choice") != "none":
        body["tools"] = [_tool(tool) for tool in chat["tools"]]
        if chat.get("tool_choice") is not None or chat.get("parallel_tool_calls") is False:
            body["tool_choice"] = _tool_choice(chat.get("tool_choice", "auto"), chat.get("parallel_tool_calls"))
    user = (chat.get("metadata") or {}).get("user_id") or chat.get("user")
    if user is not None:
        body["metadata"] = {"user_id": str(user)}
    return body


def completion(message: Any, name: str) -> dict[str, Any]:
    """The upstream's Message as a chat completion: its text blocks as the content (the refusal, when it refused),
    its `tool_use` blocks as tool calls with their ids, its stop reason and usage."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise UpstreamError(f"Upstream {name!r} returned a body that is not a Message.", failure="malformed")
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        if not isinstance(block, dict):
            raise UpstreamError(
                f"Upstream {name!r} returned a content block that is not an object.", failure="malformed"
            )
        if block.get("type") == "text":
            text.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})  # fmt: skip
    stop = str(message.get("stop_reason") or "end_turn")
    said = "".join(text)
    refused = stop == "refusal"
    shaped: dict[str, Any] = {
        "role": "assistant",
        "content": None if refused or (calls and not said) else said,
        "refusal": (said or "The model declined to answer.") if refused else None,
    }
    if calls:
        shaped["tool_calls"] = calls
    usage = message.get("usage") or {}
    prompt, answer = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return {
        "id": "chatcmpl-" + str(message.get("id", "")).removeprefix(PREFIX),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [{"index": 0, "message": shaped, "finish_reason": _FINISH.get(stop, "stop"), "logprobs": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer},
    }


def _object(value: Any) -> dict[str, Any]:
    """A streamed event's field that should be an object, or an empty one (an upstream's stream is not trusted)."""
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


class Chunks:
    """An Anthropic Messages stream read as `chat.completion.chunk`s, event by event: text deltas as content, a
    `tool_use` block as a tool call (its id and name when it starts, its input's JSON piece by piece), the stop
    reason and usage from `message_delta`. An `error` event is an upstream error; a stream that ends without its
    stop reason has not answered (`Assembled` sees no finish reason)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._head: dict[str, Any] = {"id": "chatcmpl-streamed", "created": int(time.time()), "model": None}
        self._prompt = 0
        self._calls: dict[int, int] = {}  # a tool_use block's index -> its tool call's
        self._argued: set[int] = set()  # the tool calls whose input has begun
        self._text = False

    def __call__(self, event: Any) -> list[dict[str, Any]]:
        if not isinstance(event, dict):
            raise UpstreamError(f"Upstream {self.name!r} streamed an event that is not an object.", failure="malformed")
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message = event["message"]
            self._head = {**self._head, "id": "chatcmpl-" + str(message.get("id", "")).removeprefix(PREFIX),
                          "model": message.get("model")}  # fmt: skip
            self._prompt = _count(_object(message.get("usage")).get("input_tokens"))
        elif kind == "content_block_start":
            block = _object(event.get("content_block"))
            if block.get("type") == "tool_use":
                call = self._calls.setdefault(self._index(event), len(self._calls))
                function = {"name": block.get("name"), "arguments": ""}
                return [self._chunk({"tool_calls": [{"index": call, "id": block.get("id"), "type": "function",
                                                     "function": function}]})]  # fmt: skip
            if block.get("type") == "text" and block.get("text"):
                return self._said(str(block["text"]))
        elif kind == "content_block_delta":
            delta = _object(event.get("delta"))
            if delta.get("type") == "text_delta":
                return self._said(str(delta.get("text", "")))
            if delta.get("type") == "input_json_delta" and self._index(event) in self._calls:
                call = self._calls[self._index(event)]
                self._argued.add(call)
                return [self._arguments(call, str(delta.get("partial_json", "")))]
        elif kind == "content_block_stop":
            ended = self._calls.get(self._index(event))
            if ended is not None and ended not in self._argued:
                return [self._arguments(ended, "{}")]  # a tool called without input, as the unstreamed Message says
        elif kind == "message_delta":
            stop = str(_object(event.get("delta")).get("stop_reason") or "end_turn")
            answer = _count(_object(event.get("usage")).get("output_tokens"))
            usage = {"prompt_tokens": self._prompt, "completion_tokens": answer, "total_tokens": self._prompt + answer}
            refused = {"refusal": "The model declined to answer."} if stop == "refusal" and not self._text else {}
            return [{**self._chunk(refused, finish=_FINISH.get(stop, "stop")), "usage": usage}]
        elif kind == "error":
            error = event.get("error") or {}
            why = error.get("message") if isinstance(error, dict) else None
            raise UpstreamError(
                f"Upstream {self.name!r} failed the message: {why or 'no reason given'}", failure="failed"
            )
        return []

    def _index(self, event: dict[str, Any]) -> int:
        index = event.get("index", 0)
        if not isinstance(index, int):
            raise UpstreamError(f"Upstream {self.name!r} streamed a block without an index.", failure="malformed")
        return index

    def _said(self, text: str) -> list[dict[str, Any]]:
        self._text = self._text or bool(text)
        return [self._chunk({"content": text})]

    def _arguments(self, call: int, piece: str) -> dict[str, Any]:
        return self._chunk({"tool_calls": [{"index": call, "function": {"arguments": piece}}]})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self._head, "object": "chat.completion.chunk", "choices": [choice]}
