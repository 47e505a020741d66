"""The chat-completions request: what the gateway validates, and what it sends upstream.

Only the fields the gateway acts on are checked; every other field passes through to the upstream
untouched, so new OpenAI parameters work without a gateway release.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import InvalidRequest

UPSTREAM_TOP_LOGPROBS = 5
# Deepest nesting of arrays and objects a request may have. Real requests (tool schemas included) stay far
# below it; the JSON encoders downstream (upstream call, storage) give out somewhere past 250.
MAX_DEPTH = 128
HITL_WAIT_HEADER = "x-hitl-wait"
MAX_MODEL_NAME = 256


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool = False


class HitlOptions(BaseModel):
    """The gateway's extension field (`extra_body={"hitl": {...}}` in the OpenAI SDK)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    wait: float | None = Field(None, ge=0, description="Seconds to wait for an agent if held.")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    # Stored and indexed with the exchange: a longer name is refused before the upstream is asked (PostgreSQL's
    # index rows have a size limit; a 3,000-character name once failed after the upstream had answered).
    model: str = Field(min_length=1, max_length=MAX_MODEL_NAME)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=16)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    metadata: dict[str, str] | None = None
    hitl: HitlOptions | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _describe(error: ErrorDetails) -> tuple[str, str | None]:
    loc = [str(part) for part in error.get("loc", ())]
    # A union reports one error per branch; its first branch name ("str") in the path helps no one.
    loc = [part for part in loc if part not in ("str", "list[dict[str,any]]", "function-after")]
    param = ".".join(loc) or None
    if error["type"] == "missing":
        return f"Missing required parameter: '{param}'.", param
    if error["type"] == "extra_forbidden":
        return f"Unrecognized request argument supplied: '{param}'.", param
    return f"Invalid value for '{param}': {error['msg']}.", param


def _deeper_than(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def load(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object, strictly: what fails is the client's error, not a 500."""
    try:
        # Strict JSON (RFC 8259): no NaN or Infinity, no lone surrogates, nesting at most 1024 deep. What
        # passes can be stored and sent upstream as it is; what does not is the client's error, not a 500.
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc.msg}). The body must be a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if _deeper_than(raw, MAX_DEPTH):
        raise InvalidRequest(f"The request body is nested more than {MAX_DEPTH} levels deep.", code="invalid_json")
    return raw


def with_hitl_headers(raw: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """The `hitl` options a client sent as headers (`x-hitl-wait`), for clients that cannot add a body field (the
    Vercel AI SDK's provider, LangChain); what the body says wins."""
    wait = headers.get(HITL_WAIT_HEADER)
    if wait is None or (isinstance(raw.get("hitl"), dict) and "wait" in raw["hitl"]):
        return raw
    try:
        seconds = float(wait)
    except ValueError:
        raise InvalidRequest(f"The {HITL_WAIT_HEADER} header must be a number of seconds.", param="hitl.wait") from None
    hitl = raw.get("hitl")
    return {**raw, "hitl": {**(hitl if isinstance(hitl, dict) else {}), "wait": seconds}}


def validate(raw: dict[str, Any]) -> ChatRequest:
    try:
        return ChatRequest.model_validate(raw)
    except ValidationError as exc:
        message, param = _describe(exc.errors()[0])
        raise InvalidRequest(message, param=param, code="invalid_value") from None


def parse(body: bytes, headers: Mapping[str, str] | None = None) -> tuple[ChatRequest, dict[str, Any]]:
    """Validate a request body; returns the typed view and the raw dict that passes upstream."""
    raw = load(body)
    if headers is not None:
        raw = with_hitl_headers(raw, headers)
    return validate(raw), raw


def question_of(messages: list[dict[str, Any]] | None) -> str:
    """The last user message as text: what the candidate answers."""
    for message in reversed(messages or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            parts = (str(part.get("text", "")) for part in content or [] if isinstance(part, dict))
            return " ".join(part for part in parts if part)
    return ""


def upstream_body(raw: dict[str, Any], request: ChatRequest, want_logprobs: bool) -> dict[str, Any]:
    body = dict(raw)
    if want_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = max(UPSTREAM_TOP_LOGPROBS, request.top_logprobs or 0)
    return body
