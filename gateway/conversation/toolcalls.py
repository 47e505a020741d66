"""The tool calls a candidate answer makes, as the policy and the console read them.

A tool call carries no logprobs, so it is judged by what it would do: its function name and its
arguments, against the conversation and the tool's description (`judged`, what the self-check reads).
Arguments arrive as a JSON string the model wrote; one that does not parse to a JSON object is `malformed`,
recorded, and routed by the policy's `unscored` outcome.

A request whose tools describe a structured output is a `structured_output`: one tool offered and forced
(`tool_choice` naming it, or `required` with that one tool), which is how instructor's TOOLS mode, pydantic-ai's
default output and LangChain's `with_structured_output(method="function_calling")` ask for an object. Its call
is an answer, not an action: it is routed by confidence like text, never by the policy's `tool_calls` outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def structured_output(request: dict[str, Any]) -> bool:
    """Whether the request asks for a structured answer through a tool call (one tool, forced)."""
    tools = request.get("tools")
    if not isinstance(tools, list) or len(tools) != 1 or not isinstance(tools[0], dict):
        return False
    choice = request.get("tool_choice")
    if choice == "required":
        return True
    function = tools[0].get("function")
    name = function.get("name") if isinstance(function, dict) else None
    forced = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    return name is not None and forced == name


def judged(calls: Sequence[ToolCall], request: dict[str, Any]) -> str:
    """The calls as the self-check judge reads them: what each would do, with the tool's own description."""
    described = {}
    for tool in request.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            described[function["name"]] = str(function.get("description") or "").strip()
    lines = []
    for call in calls:
        what = f" ({described[call.name]})" if described.get(call.name) else ""
        arguments = json.dumps(call.arguments, ensure_ascii=False) if call.arguments is not None else "(not valid JSON)"
        lines.append(f"Call the tool `{call.name}`{what} with the arguments {arguments}.")
    return "\n".join(lines)
