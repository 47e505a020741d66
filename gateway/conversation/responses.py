"""The OpenAI Responses API as a dialect at the edge: a `POST /v1/responses` body becomes the conversation every
other part of the gateway works on (a chat-completions request: instructions as a system message, input items as
messages, function calls with their ids, function outputs as tool messages, the tools offered, the structured
output's schema), and the answer the gateway delivers goes back as a Response object or its stream of events.

What the gateway cannot honour is refused by name (built-in tools such as web search, a server-side
`conversation`), never silently dropped: a model asked to search must not answer as if it had.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

from gateway.conversation import wire
from gateway.errors import InvalidRequest

PREFIX = "resp_"
# Chat-completions fields with the same name and meaning in a Responses request, passed as they are.
_SAME = ("model", "temperature", "top_p", "metadata", "parallel_tool_calls", "user", "stream", "hitl", "top_logprobs")
_REFUSED = {"conversation": "server-side conversations", "prompt": "stored prompts"}
LOGPROBS = "message.output_text.logprobs"
# The events that open and close a whole Response, around those of its items.
_FRAME = {"response.created", "response.in_progress", "response.completed", "response.incomplete"}


def response_id(exchange_id: str) -> str:
    """A Response's id: the exchange's own, in the Responses API's spelling."""
    return PREFIX + exchange_id.split("-", 1)[-1]


def exchange_id(response_id: str) -> str:
    """The exchange a Response id names (a malformed one names none, and is not found)."""
    return "chatcmpl-" + response_id.removeprefix(PREFIX)


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _text_of(part: dict[str, Any], param: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "input_image":
        url = part.get("image_url") or part.get("file_id")
        if not isinstance(url, str):
            raise _bad("An input_image needs an image_url.", param)
        return {"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    raise _bad(f"Content of type {kind!r} is not supported by this gateway.", param)


def _content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad("A message's content must be a string or a list of content parts.", param)
    parts = [_text_of(part, f"{param}[{i}]") for i, part in enumerate(content) if isinstance(part, dict)]
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)  # plain text reads the same to every upstream
    return parts


def _messages(items: Any) -> list[dict[str, Any]]:
    """Input items as chat messages: consecutive function calls become one assistant message's tool calls."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise _bad("input must be a string or a non-empty list of items.", "input")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise _bad("Each input item must be an object.", param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"Unknown role {role!r}.", f"{param}.role")
            messages.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _content(item.get("content"), f"{param}.content"),
                }
            )
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}  # fmt: skip
            if not isinstance(call["id"], str) or not isinstance(item.get("name"), str):
                raise _bad("A function_call item needs a call_id and a name.", param)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(item.get("call_id"), str):
                raise _bad("A function_call_output item needs the call_id it answers.", param)
            text = output if isinstance(output, str) else wire.dumps(output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            continue  # a reasoning model's own notes from an earlier turn: nothing a chat upstream reads
        else:
            raise _bad(f"Input items of type {kind!r} are not supported by this gateway.", f"{param}.type")
    return messages


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools must be a list.", "tools")
    converted = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _bad(f"Only function tools can be used through this gateway, not {kind!r}.", f"tools[{index}].type")
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if choice in ("auto", "none", "required"):
        return choice
    raise _bad("tool_choice must be auto, none, required or a function.", "tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    form = text.get("format") if isinstance(text, dict) else None
    if not isinstance(form, dict) or form.get("type") in (None, "text"):
        return None
    if form["type"] == "json_object":
        return {"type": "json_object"}
    if form["type"] == "json_schema":
        schema = {key: form[key] for key in ("name", "schema", "strict", "description") if key in form}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad(f"Unknown text.format type {form['type']!r}.", "text.format.type")


def to_chat(body: dict[str, Any], earlier: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The Responses request as the chat-completions request it asks for; `earlier` is the conversation of
    `previous_response_id`, answer included."""
    for name, what in _REFUSED.items():
        if body.get(name) is not None:
            raise _bad(f"{what.capitalize()} (`{name}`) are not supported by this gateway.", name)
    # Only what translates: a Responses-only field (`reasoning`, `truncation`, `max_tool_calls`, ...) means nothing
    # to an upstream that speaks chat completions, which would refuse the whole request for it.
    chat: dict[str, Any] = {key: body[key] for key in _SAME if key in body}
    messages = list(earlier or [])
    if body.get("instructions"):
        # Instructions are not carried over from a previous response: each request states its own.
        messages = [m for m in messages if m.get("role") != "system"]
        messages.insert(0, {"role": "system", "content": str(body["instructions"])})
    if "input" not in body:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    chat["messages"] = messages + _messages(body["input"])
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if (form := _response_format(body.get("text"))) is not None:
        chat["response_format"] = form
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if LOGPROBS in (body.get("include") or []):
        chat["logprobs"] = True
    if chat.get("stream") and isinstance(body.get("stream_options"), dict):
        chat["stream_options"] = {}
    return chat


def _output(message: dict[str, Any], logprobs: Any, item_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    elif message.get("content") or not message.get("tool_calls"):
        tokens = (logprobs or {}).get("content") if isinstance(logprobs, dict) else None
        parts.append({"type": "output_text", "text": message.get("content") or "", "annotations": [],
                      "logprobs": [_token(token) for token in tokens or []]})  # fmt: skip
    if parts:
        items.append({"type": "message", "id": item_id, "status": "completed", "role": "assistant", "content": parts})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        items.append({"type": "function_call", "id": "fc_" + str(call.get("id", "")), "call_id": call.get("id"),
                      "name": function.get("name"), "arguments": function.get("arguments") or "",
                      "status": "completed"})  # fmt: skip
    return items


def _token(token: dict[str, Any]) -> dict[str, Any]:
    top = [{"token": t.get("token"), "logprob": t.get("logprob"), "bytes": t.get("bytes")}
           for t in token.get("top_logprobs") or []]  # fmt: skip
    return {
        "token": token.get("token"),
        "logprob": token.get("logprob"),
        "bytes": token.get("bytes"),
        "top_logprobs": top,
    }


def render(completion: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The delivered chat completion as a Response object, echoing what the request set."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    rid = response_id(str(completion["id"]))
    usage = completion.get("usage") or {}
    incomplete = choice.get("finish_reason") in ("length", "content_filter")
    reason = "max_output_tokens" if choice.get("finish_reason") == "length" else "content_filter"
    return {
        "id": rid,
        "object": "response",
        "created_at": int(completion.get("created") or time.time()),
        "status": "incomplete" if incomplete else "completed",
        "background": bool(request.get("background")),
        "error": None,
        "incomplete_details": {"reason": reason} if incomplete else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": completion.get("model"),
        "output": _output(message, choice.get("logprobs"), "msg_" + rid.removeprefix(PREFIX)),
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "store": request.get("store", True),
        "temperature": request.get("temperature"),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation", "disabled"),
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage.get("completion_tokens", 0),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.get("total_tokens", 0),
        },
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
        "hitl": completion.get("hitl"),
    }


def unanswered(response_id: str, request: dict[str, Any], status: str, created: float) -> dict[str, Any]:
    """A Response with no answer yet (`queued`, `in_progress`) or none to come (`cancelled`, `failed`)."""
    empty = render({"id": exchange_id(response_id), "created": created, "model": request.get("model")}, request)
    return {**in_progress(empty, status), "background": bool(request.get("background", True))}


def in_progress(response: dict[str, Any], status: str = "in_progress") -> dict[str, Any]:
    """The Response as it stands before its answer is out: no output, no usage."""
    return {**response, "status": status, "output": [], "usage": None, "incomplete_details": None}


def _events(response: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "response.created", {"response": in_progress(response)}
    yield "response.in_progress", {"response": in_progress(response)}
    for index, item in enumerate(response["output"]):
        if item["type"] == "function_call":
            yield (
                "response.output_item.added",
                {"output_index": index, "item": {**item, "arguments": "", "status": "in_progress"}},
            )
            where = {"item_id": item["id"], "output_index": index}
            yield "response.function_call_arguments.delta", {**where, "delta": item["arguments"]}
            yield (
                "response.function_call_arguments.done",
                {**where, "name": item["name"], "arguments": item["arguments"]},
            )
        else:
            yield (
                "response.output_item.added",
                {"output_index": index, "item": {**item, "content": [], "status": "in_progress"}},
            )
            for position, part in enumerate(item["content"]):
                where = {"item_id": item["id"], "output_index": index, "content_index": position}
                if part["type"] == "refusal":
                    yield "response.content_part.added", {**where, "part": {"type": "refusal", "refusal": ""}}
                    yield "response.refusal.delta", {**where, "delta": part["refusal"]}
                    yield "response.refusal.done", {**where, "refusal": part["refusal"]}
                else:
                    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    yield "response.content_part.added", {**where, "part": empty}
                    yield "response.output_text.delta", {**where, "delta": part["text"], "logprobs": part["logprobs"]}
                    yield "response.output_text.done", {**where, "text": part["text"], "logprobs": part["logprobs"]}
                yield "response.content_part.done", {**where, "part": part}
        yield "response.output_item.done", {"output_index": index, "item": item}
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    yield final, {"response": response}


def rest_of(response: dict[str, Any], sent: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The end of a Response's stream whose message item and text part are open and have had `sent`: the rest of
    the text (a text that does not go on from `sent` follows it), the `.done` events, the other items, and the
    final event with the whole Response."""
    items = list(response["output"])
    opened = items.pop(0) if items and items[0]["type"] == "message" else None
    text = ""
    if opened is not None and opened["content"] and opened["content"][0]["type"] == "output_text":
        text = opened["content"][0]["text"]
    where = {"item_id": response["output"][0]["id"] if opened else "msg_" + response["id"].removeprefix(PREFIX),
             "output_index": 0, "content_index": 0}  # fmt: skip
    rest = text.removeprefix(sent)
    if rest:
        yield "response.output_text.delta", {**where, "delta": rest, "logprobs": []}
    shown = sent + rest if not text.startswith(sent) else text
    part = {"type": "output_text", "text": shown, "annotations": [], "logprobs": []}
    yield "response.output_text.done", {**where, "text": shown, "logprobs": []}
    yield "response.content_part.done", {**where, "part": part}
    item = opened or {"type": "message", "id": where["item_id"], "status": "completed", "role": "assistant",
                      "content": [part]}  # fmt: skip
    yield "response.output_item.done", {"output_index": 0, "item": item}
    for index, other in enumerate(items, start=1):
        for kind, data in _events({**response, "output": [other]}):
            if kind not in _FRAME:
                yield kind, ({**data, "output_index": index} if "output_index" in data else data)
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    yield final, {"response": response}


def events(response: dict[str, Any], start: int = 0, until: str | None = None) -> bytes:
    """The Response's stream, every event with its `sequence_number`, in one piece; `start` skips the events a
    resumed stream has had (`starting_after`), `until` ends it after the first event of that type."""
    out = []
    for number, (kind, data) in zip(itertools.count(), _events(response), strict=False):
        if number >= start:
            out.append(event(kind, number, data))
        if kind == until:
            break
    return b"".join(out)


def event(kind: str, number: int, data: dict[str, Any]) -> bytes:
    """One Responses SSE event: its type named twice, as the API does (the `event:` line and the `type` field)."""
    return (
        f"event: {kind}\r\ndata: ".encode()
        + wire.dumps({"type": kind, **data, "sequence_number": number}).encode()
        + b"\r\n\r\n"
    )
