"""The Responses API spoken to an upstream: the conversation (a chat-completions request) as a `POST /responses`
body, and the upstream's Response back as the chat completion every other part of the gateway reads.

Logprobs are asked for as the API asks for them (`include: ["message.output_text.logprobs"]` and `top_logprobs`),
so scoring reads the same tokens whichever API the upstream speaks. Nothing is stored upstream (`store: false`):
the gateway keeps the conversation, and `previous_response_id` is resolved before the upstream is asked.

A chat field the Responses API has no place for is refused by name, never silently dropped: a client asking for
stop sequences must not get an answer that ignored them.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.conversation.responses import LOGPROBS, PREFIX
from gateway.errors import InvalidRequest, UpstreamError

MIN_OUTPUT_TOKENS = 16
# Handled here by name, or the gateway's own: never passed on as they are.
_TRANSLATED = {"model", "messages", "tools", "tool_choice", "response_format", "max_tokens", "max_completion_tokens",
               "logprobs", "top_logprobs", "n", "reasoning_effort", "store"}  # fmt: skip
_NO_PLACE = ("stop", "seed", "frequency_penalty", "presence_penalty", "logit_bias", "audio", "modalities")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content or [] if isinstance(part, dict))


def _parts(content: list[Any], role: str) -> list[dict[str, Any]]:
    kind = "output_text" if role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail", "auto")})
        else:
            parts.append({"type": kind, "text": str(part.get("text", ""))})
    return parts


def _items(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """The instructions (every system message, in order) and the input items."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            instructions.append(_text(content))
        elif role == "tool":
            output = content if isinstance(content, str) else _text(content)
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"), "output": output})
        else:
            if content:
                shaped = content if isinstance(content, str) else _parts(content, str(role))
                items.append({"type": "message", "role": role, "content": shaped})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id"), "name": function.get("name"),
                              "arguments": function.get("arguments") or ""})  # fmt: skip
    return ("\n\n".join(instructions) or None), items


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    keep = ("name", "description", "parameters", "strict")
    return {"type": "function", **{key: function[key] for key in keep if key in function}}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    return choice


def _format(response_format: dict[str, Any]) -> dict[str, Any]:
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema") or {}
        keep = ("name", "schema", "strict", "description")
        return {"type": "json_schema", **{key: schema[key] for key in keep if key in schema}}
    return {"type": response_format.get("type", "text")}


def request(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """The conversation as the Responses request an upstream that speaks it natively is sent."""
    for name in _NO_PLACE:
        if chat.get(name) is not None:
            raise InvalidRequest(
                f"`{name}` cannot be sent to this model: its upstream speaks the Responses API, which has no such "
                "parameter.",
                param=name,
                code="unsupported_parameter",
            )
    if chat.get("n", 1) != 1:
        raise InvalidRequest("This model answers one choice per request: use n=1.", param="n")
    instructions, items = _items(list(chat.get("messages") or []))
    body: dict[str, Any] = {"model": model, "input": items, "store": False}
    # The rest have the same name and meaning in a Responses request (temperature, top_p, metadata, user, ...).
    body.update({key: value for key, value in chat.items() if key not in _TRANSLATED and key not in _NO_PLACE})
    if instructions is not None:
        body["instructions"] = instructions
    if chat.get("tools"):
        body["tools"] = [_tool(tool) for tool in chat["tools"]]
    if chat.get("tool_choice") is not None:
        body["tool_choice"] = _tool_choice(chat["tool_choice"])
    if isinstance(chat.get("response_format"), dict):
        body["text"] = {"format": _format(chat["response_format"])}
    limit = chat.get("max_completion_tokens", chat.get("max_tokens"))
    if limit is not None:
        # The Responses API takes no limit under 16 tokens; a one-token judge reads only its first token anyway.
        body["max_output_tokens"] = max(limit, MIN_OUTPUT_TOKENS)
    if chat.get("reasoning_effort") is not None:
        body["reasoning"] = {"effort": chat["reasoning_effort"]}
    if chat.get("logprobs"):
        body["include"] = [LOGPROBS]
        body["top_logprobs"] = chat.get("top_logprobs") or 0
    return body


def _malformed(name: str, why: str) -> UpstreamError:
    return UpstreamError(f"Upstream {name!r} returned a Response {why}.", failure="malformed")


def _token(token: dict[str, Any]) -> dict[str, Any]:
    top = [{"token": t.get("token"), "logprob": t.get("logprob"), "bytes": t.get("bytes")}
           for t in token.get("top_logprobs") or [] if isinstance(t, dict)]  # fmt: skip
    return {"token": token.get("token"), "logprob": token.get("logprob"), "bytes": token.get("bytes"),
            "top_logprobs": top}  # fmt: skip


def _created(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else int(time.time())


def completion(response: Any, name: str) -> dict[str, Any]:
    """The upstream's Response as a chat completion: its text and refusal parts as the message, its function calls
    as tool calls with their call ids, the text's logprobs as the choice's, its usage; a failed Response is an
    upstream error."""
    if not isinstance(response, dict) or not isinstance(response.get("output"), list):
        raise _malformed(name, "without output")
    if response.get("status") == "failed":
        error = response.get("error") or {}
        why = error.get("message") if isinstance(error, dict) else None
        raise UpstreamError(f"Upstream {name!r} failed the response: {why or 'no reason given'}", failure="failed")
    text: list[str] = []
    refusal: list[str] = []
    tokens: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for item in response["output"]:
        if not isinstance(item, dict):
            raise _malformed(name, "with an output item that is not an object")
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if part.get("type") == "refusal":
                    refusal.append(str(part.get("refusal", "")))
                elif part.get("type") == "output_text":
                    text.append(str(part.get("text", "")))
                    tokens += [_token(token) for token in part.get("logprobs") or [] if isinstance(token, dict)]
        elif item.get("type") == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments") or ""}
            calls.append({"id": item.get("call_id"), "type": "function", "function": function})
    content = "".join(text) if text or not (calls or refusal) else None
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": "".join(refusal) or None}
    if calls:
        message["tool_calls"] = calls
    reason = (
        ((response.get("incomplete_details") or {}).get("reason")) if response.get("status") == "incomplete" else None
    )
    finish = {"max_output_tokens": "length", "content_filter": "content_filter"}.get(str(reason), "stop")
    if calls and reason is None:
        finish = "tool_calls"
    usage = response.get("usage") or {}
    return {
        "id": "chatcmpl-" + str(response.get("id", "")).removeprefix(PREFIX),
        "object": "chat.completion",
        "created": _created(response.get("created_at")),
        "model": response.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish,
                "logprobs": {"content": tokens, "refusal": None} if tokens else None,
            }
        ],  # fmt: skip
        "usage": {
            "prompt_tokens": usage.get("input_tokens", 0),
            "completion_tokens": usage.get("output_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
        },
    }


class Chunks:
    """A Responses stream read as `chat.completion.chunk`s, event by event: each text delta with the logprobs of
    its tokens, each refusal delta, each function call once it is whole (a tool call is never released in part),
    and, from the final Response, the finish reason and usage. A failed Response or an `error` event is an upstream
    error; a stream that ends without its final Response has not answered (`Assembled` sees no finish reason)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._head: dict[str, Any] = {"id": "chatcmpl-streamed", "created": int(time.time()), "model": None}
        self._calls = 0

    def __call__(self, event: Any) -> list[dict[str, Any]]:
        if not isinstance(event, dict):
            raise UpstreamError(f"Upstream {self.name!r} streamed an event that is not an object.", failure="malformed")
        kind = event.get("type")
        if kind == "response.created" and isinstance(event.get("response"), dict):
            response = event["response"]
            self._head = {
                "id": "chatcmpl-" + str(response.get("id", "")).removeprefix(PREFIX),
                "created": _created(response.get("created_at")),
                "model": response.get("model"),
            }
        elif kind == "response.output_text.delta":
            logprobs = event.get("logprobs")
            tokens = (
                [_token(token) for token in logprobs if isinstance(token, dict)] if isinstance(logprobs, list) else []
            )
            return [self._chunk({"content": str(event.get("delta", ""))}, tokens)]
        elif kind == "response.refusal.delta":
            return [self._chunk({"refusal": str(event.get("delta", ""))})]
        elif kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            item = event["item"]
            if item.get("type") != "function_call":
                return []
            function = {"name": item.get("name"), "arguments": item.get("arguments") or ""}
            call = {"index": self._calls, "id": item.get("call_id"), "type": "function", "function": function}
            self._calls += 1
            return [self._chunk({"tool_calls": [call]})]
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            whole = completion(event.get("response"), self.name)  # a failed one raises
            choice = whole["choices"][0]
            unseen = choice["message"].get("tool_calls") if not self._calls else None  # no `done` event for them
            delta = {"tool_calls": [{"index": i, **call} for i, call in enumerate(unseen)]} if unseen else {}
            return [{**self._chunk(delta, finish=choice["finish_reason"]), "usage": whole["usage"]}]
        elif kind == "error":
            error = event.get("error")
            why = event.get("message") or (error.get("message") if isinstance(error, dict) else None) or "no reason"
            raise UpstreamError(f"Upstream {self.name!r} failed the response: {why}", failure="failed")
        return []

    def _chunk(
        self, delta: dict[str, Any], tokens: list[dict[str, Any]] | None = None, finish: str | None = None
    ) -> dict[str, Any]:
        logprobs = {"content": tokens, "refusal": None} if tokens else None
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {**self._head, "object": "chat.completion.chunk", "choices": [choice]}
