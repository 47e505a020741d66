"""An agent's edit of a held tool call: the same calls, with arguments the agent wrote, checked before anything
is sent.

Each call's new arguments must be a JSON object that meets the JSON schema the request declared for that tool
(`tools[].function.parameters`, or the legacy `functions[].parameters`), checked in the sandbox (`schemas.py`
says how). A schema that cannot be used is not held against the agent: the arguments are then only checked to
be an object. The calls keep their ids,
so the client's agent loop matches each tool result to the call it made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest
from gateway.review import schemas
from gateway.review.sandbox import Sandbox


@dataclass(frozen=True)
class CallForm:
    """One call as the console's editor shows it."""

    id: str
    name: str
    arguments: str  # pretty-printed when they parse, else as the model wrote them
    schema: str | None  # the tool's parameters schema, pretty-printed; None when the request declared none


def candidate_calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool calls of the candidate's first choice, the one an agent reviews."""
    choices = response.get("choices") or [{}]
    calls = (choices[0].get("message") or {}).get("tool_calls") or []
    return [call for call in calls if isinstance(call, dict)]


def _schemas(request: dict[str, Any]) -> dict[str, Any]:
    """Tool name -> its parameters schema, from `tools` (and the legacy `functions`)."""
    found: dict[str, Any] = {}
    for function in request.get("functions") or []:
        if isinstance(function, dict) and "name" in function:
            found[str(function["name"])] = function.get("parameters")
    for tool in request.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and "name" in function:
            found[str(function["name"])] = function.get("parameters")
    return found


def _name(call: dict[str, Any]) -> str:
    return str((call.get("function") or {}).get("name", ""))


def _pretty(raw: Any) -> str:
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(raw or "")


def forms(request: dict[str, Any], response: dict[str, Any]) -> list[CallForm]:
    declared = _schemas(request)
    return [
        CallForm(
            id=str(call.get("id", "")),
            name=_name(call),
            arguments=_pretty((call.get("function") or {}).get("arguments")),
            schema=json.dumps(declared[_name(call)], indent=2) if declared.get(_name(call)) is not None else None,
        )
        for call in candidate_calls(response)
    ]


def _parsed(call: dict[str, Any], raw: str) -> dict[str, Any]:
    """The agent's arguments for `call`, parsed: they must be a JSON object."""
    try:
        arguments = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"The arguments of {_label(call)} are not valid JSON: {exc}.", param="arguments") from None
    if not isinstance(arguments, dict):
        raise InvalidRequest(f"The arguments of {_label(call)} must be a JSON object.", param="arguments")
    return arguments


def _label(call: dict[str, Any]) -> str:
    return f"{_name(call)} ({call.get('id', '')})"


async def edited(
    request: dict[str, Any], response: dict[str, Any], arguments: dict[str, str], sandbox: Sandbox
) -> list[dict[str, Any]]:
    """The candidate's tool calls with the agent's arguments (call id -> JSON text), each checked against its
    tool's schema in the sandbox; a call the agent sent no arguments for keeps the model's. `InvalidRequest`
    names the first call that fails."""
    calls = candidate_calls(response)
    known = {str(call.get("id", "")) for call in calls}
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise InvalidRequest(f"The answer has no tool call {unknown[0]!r}.", param="arguments")
    declared = _schemas(request)
    result = []
    for call in calls:
        call_id = str(call.get("id", ""))
        function = dict(call.get("function") or {})
        if call_id in arguments:
            parsed = _parsed(call, arguments[call_id])
            what = f"Checking the arguments of {_label(call)} against the tool's schema"
            schema = declared.get(_name(call))
            found = await sandbox.run(schemas.problem, schema, parsed, what=what) if isinstance(schema, dict) else None
            if found is not None:
                raise InvalidRequest(
                    f"The arguments of {_label(call)} do not match the tool's schema {found}.", param="arguments"
                )
            function["arguments"] = json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))
        result.append({**call, "function": function})
    return result


def changed(calls: list[dict[str, Any]], drafts: dict[str, str]) -> list[str]:
    """The calls (as "name (id)") whose draft arguments (call id -> JSON text) differ in meaning from the
    model's; a draft that does not parse differs."""
    found = []
    for call in calls:
        draft = drafts.get(str(call.get("id", "")))
        if draft is None:
            continue
        try:
            mine = json.loads(draft)
        except (ValueError, RecursionError):
            found.append(_label(call))
            continue
        if not same_calls([{**call, "function": {"name": _name(call), "arguments": mine}}], [call]):
            found.append(_label(call))
    return found


def same_calls(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> bool:
    """Whether two lists of calls do the same thing: same names, and arguments equal as JSON."""

    def meaning(calls: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        found = []
        for call in calls:
            raw = (call.get("function") or {}).get("arguments")
            try:
                value = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                value = raw
            found.append((_name(call), value))
        return found

    return meaning(left) == meaning(right)
