"""The tool calls a candidate answer makes, as the policy and the console read them.

A tool call carries no logprobs, so it is judged by what it would do: its function name and its
arguments. Arguments arrive as a JSON string the model wrote; one that does not parse to a JSON object is
`malformed`, recorded, and routed by the policy's `unscored` outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MALFORMED = "tool_call:malformed_arguments"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any] | None  # None when the model's arguments are not a JSON object

    @property
    def malformed(self) -> bool:
        return self.arguments is None

    def as_facts(self) -> dict[str, Any]:
        """What a policy rule's `response.tool_calls.<path>` looks into."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


def _parsed(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def found(response: dict[str, Any]) -> list[ToolCall]:
    """Every function call in every choice of an upstream chat.completion."""
    calls: list[ToolCall] = []
    for choice in response.get("choices") or []:
        for call in (choice.get("message") or {}).get("tool_calls") or []:
            function = call.get("function") or {}
            raw = function.get("arguments")
            calls.append(
                ToolCall(
                    id=str(call.get("id", "")),
                    name=str(function.get("name", "")),
                    arguments=_parsed(raw),
                )
            )
    return calls
