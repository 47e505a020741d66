"""A streamed chat completion, put together as its chunks arrive: the text and its logprobs so far, tool calls
from their fragments (by index: the id and name once, the arguments piece by piece), the finish reason and the
usage of the last chunk. `completion()` is the `chat.completion` the upstream would have answered unstreamed, so
scoring, policy and storage read a streamed answer exactly as any other.

An upstream that stops before saying why (no finish reason: a cut connection, a killed server) has not answered;
its partial text is never taken for an answer.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.errors import UpstreamError


class Assembled:
    def __init__(self, name: str) -> None:
        self.name = name  # the upstream's, for errors
        self.content = ""  # the text so far
        self.tokens: list[dict[str, Any]] = []
        self.refusal: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.head: dict[str, Any] = {}

    def add(self, chunk: Any) -> None:
        """Take one chunk (a `chat.completion.chunk`); only the first choice is an answer (n=1 when streamed)."""
        if not isinstance(chunk, dict):
            raise UpstreamError(f"Upstream {self.name!r} streamed a chunk that is not an object.", failure="malformed")
        if not self.head:
            self.head = {key: chunk.get(key) for key in ("id", "created", "model", "system_fingerprint")}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content += delta["content"]
            if delta.get("refusal"):
                self.refusal.append(delta["refusal"])
            for fragment in delta.get("tool_calls") or []:
                self._call(fragment)
            self.tokens += (choice.get("logprobs") or {}).get("content") or []
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def _call(self, fragment: dict[str, Any]) -> None:
        call = self.calls.setdefault(
            int(fragment.get("index", len(self.calls))), {"id": None, "type": "function", "function": {"name": ""}}
        )
        call["id"] = fragment.get("id") or call["id"]
        function = fragment.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] = call["function"].get("arguments", "") + (function.get("arguments") or "")

    def completion(self) -> dict[str, Any]:
        if self.finish is None:
            raise UpstreamError(
                f"Upstream {self.name!r} ended its stream before finishing the answer.", failure="malformed"
            )
        content = self.content if self.content or not (self.calls or self.refusal) else None
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": "".join(self.refusal) or None}
        if self.calls:
            message["tool_calls"] = [self.calls[index] for index in sorted(self.calls)]
        logprobs = {"content": self.tokens, "refusal": None} if self.tokens else None
        return {
            "id": self.head.get("id") or "chatcmpl-streamed",
            "object": "chat.completion",
            "created": self.head.get("created") or int(time.time()),
            "model": self.head.get("model"),
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": self.finish}],
            "usage": self.usage or {},
            "system_fingerprint": self.head.get("system_fingerprint"),
        }
