"""Anthropic Messages as a dialect at the edge: a `POST /v1/messages` body becomes the conversation every other part
of the gateway works on (a chat-completions request: the system prompt as a system message, text and image blocks
as content, `tool_use` blocks as tool calls with their ids, `tool_result` blocks as tool messages, the tools and
the tool choice), and the answer the gateway delivers goes back as a Message or its stream of events, errors in
Anthropic's shape.

Server tools (web search, code execution, ...) are refused by name: a model asked to search must not answer as if
it had.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from gateway.conversation import wire
from gateway.errors import GatewayError, InvalidRequest

PREFIX = "msg_"
# Anthropic's error types for the gateway's own (`GatewayError.type`); anything else is an `api_error`.
_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "rate_limit_error": "rate_limit_error",
    "review_pending": "review_pending",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
_SAME = ("model", "temperature", "top_p", "stream", "hitl")


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _image(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise _bad("An image block needs a base64 or url source.", f"{param}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(block.get("text", "")) for block in content or [] if isinstance(block, dict))


def _user(content: list[Any], param: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as tool messages (first, answering the calls before them), then the rest."""
    messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        where = f"{param}[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            text = _text(block.get("content"))
            if block.get("is_error"):
                text = f"Error: {text}"
            messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind == "document":
            raise _bad("Document blocks are not supported by this gateway.", f"{where}.type")
        else:
            raise _bad(f"Content blocks of type {kind!r} are not supported in a user turn.", f"{where}.type")
    if parts:
        plain = all(part["type"] == "text" for part in parts)
        messages.append({"role": "user", "content": "".join(p["text"] for p in parts) if plain else parts})
    return messages


def _assistant(content: list[Any], param: str) -> dict[str, Any]:
    text = []
    calls = []
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {})
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})  # fmt: skip
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's own notes from an earlier turn: nothing a chat upstream reads
        else:
            raise _bad(f"Content blocks of type {kind!r} are not supported in an assistant turn.", f"{param}[{index}]")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(turns: Any) -> list[dict[str, Any]]:
    if not isinstance(turns, list) or not turns:
        raise InvalidRequest("messages: at least one message is required.", param="messages")
    messages: list[dict[str, Any]] = []
    for index, turn in enumerate(turns):
        param = f"messages[{index}]"
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            raise _bad("Each message needs the role user or assistant.", f"{param}.role")
        content = turn.get("content")
        if isinstance(content, str):
            messages.append({"role": turn["role"], "content": content})
        elif not isinstance(content, list):
            raise _bad("A message's content must be a string or a list of blocks.", f"{param}.content")
        elif turn["role"] == "user":
            messages += _user(content, f"{param}.content")
        else:
            messages.append(_assistant(content, f"{param}.content"))
    return messages


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools must be a list.", "tools")
    converted = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _bad(f"Only client tools with an input_schema can be used through this gateway, not {kind!r}.",
                       f"tools[{index}]")  # fmt: skip
        function = {"name": tool.get("name"), "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: Any) -> Any:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind in ("auto", "any", "none"):
        return {"auto": "auto", "any": "required", "none": "none"}[kind]
    raise _bad("tool_choice must be auto, any, none or a tool.", "tool_choice")


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The Messages request as the chat-completions request it asks for."""
    if not isinstance(body.get("max_tokens"), int):
        raise InvalidRequest("max_tokens: Field required (a whole number).", param="max_tokens")
    chat: dict[str, Any] = {key: body[key] for key in _SAME if key in body}
    system = body.get("system")
    messages = [{"role": "system", "content": _text(system)}] if system else []
    chat["messages"] = messages + _messages(body.get("messages"))
    chat["max_tokens"] = body["max_tokens"]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if isinstance(body.get("metadata"), dict) and body["metadata"].get("user_id") is not None:
        chat["metadata"] = {"user_id": str(body["metadata"]["user_id"])}
    return chat


def message_id(exchange_id: str) -> str:
    return PREFIX + exchange_id.split("-", 1)[-1]


def _content(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = message.get("refusal") or message.get("content")
    if text or not message.get("tool_calls"):
        blocks.append({"type": "text", "text": text or ""})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {}  # a model's malformed arguments: the call is held, never released as it is
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments})
    return blocks


def render(completion: dict[str, Any]) -> dict[str, Any]:
    """The delivered chat completion as an Anthropic Message."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    usage = completion.get("usage") or {}
    stop = "refusal" if message.get("refusal") else _STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn")
    return {
        "id": message_id(str(completion["id"])),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": _content(message),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)},
        "hitl": completion.get("hitl"),
    }


def _events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 0}}
    yield "message_start", {"message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            yield "content_block_start", {"index": index, "content_block": {**block, "input": {}}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            yield "content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}
            delta = {"type": "text_delta", "text": block["text"]}
        if index == 0:
            yield "ping", {}
        yield "content_block_delta", {"index": index, "delta": delta}
        yield "content_block_stop", {"index": index}
    stopped = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    yield "message_delta", {"delta": stopped, "usage": {"output_tokens": usage["output_tokens"]}}
    yield "message_stop", {}


def rest_of(message: dict[str, Any], sent: str) -> bytes:
    """The end of a Message's stream whose first text block is open and has had `sent`: the rest of its text (a
    text that does not go on from `sent` follows it), that block's end, the other blocks, the stop reason."""
    out: list[bytes] = []
    blocks = list(message["content"])
    if blocks and blocks[0]["type"] == "text":
        rest = blocks.pop(0)["text"].removeprefix(sent)
        if rest:
            out.append(event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": rest}}))
    out.append(event("content_block_stop", {"index": 0}))
    for index, block in enumerate(blocks, start=1):
        if block["type"] == "tool_use":
            out.append(event("content_block_start", {"index": index, "content_block": {**block, "input": {}}}))
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            out.append(event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}))
            delta = {"type": "text_delta", "text": block["text"]}
        out.append(event("content_block_delta", {"index": index, "delta": delta}))
        out.append(event("content_block_stop", {"index": index}))
    stopped = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    out.append(event("message_delta", {"delta": stopped, "usage": {"output_tokens": message["usage"]["output_tokens"]},
                                       "hitl": message.get("hitl")}))  # fmt: skip
    out.append(event("message_stop", {}))
    return b"".join(out)


def events(message: dict[str, Any]) -> bytes:
    """The Message's stream in one piece, as Anthropic sends it: `event:` names, then JSON with the same `type`."""
    return b"".join(event(kind, data) for kind, data in _events(message))


def event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\r\ndata: ".encode() + wire.dumps({"type": kind, **data}).encode() + b"\r\n\r\n"


def error_body(error: GatewayError) -> dict[str, Any]:
    """A gateway error in Anthropic's shape; a held answer's error still names its review and where to poll."""
    details = error.body()["error"]
    kind = "not_found_error" if error.status_code == 404 else _ERROR_TYPES.get(error.type, "api_error")
    extra = {key: details[key] for key in ("review_id", "poll_url") if key in details}
    return {"type": "error", "error": {"type": kind, "message": error.message, **extra}}
