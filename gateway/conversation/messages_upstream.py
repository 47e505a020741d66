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
