"""An agent's edit of a held tool call: the same calls, with arguments the agent wrote, checked before anything
is sent.

Each call's new arguments must be a JSON object that meets the JSON schema the request declared for that tool
(`tools[].function.parameters`, or the legacy `functions[].parameters`). A schema that is not valid JSON Schema
is not held against the agent: the arguments are then only checked to be an object. The calls keep their ids,
so the client's agent loop matches each tool result to the call it made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest

# Longest part of a validation message shown to the agent: jsonschema quotes the offending value in full.
_SHOWN = 300


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
    schemas = _schemas(request)
    return [
        CallForm(
            id=str(call.get("id", "")),
            name=_name(call),
            arguments=_pretty((call.get("function") or {}).get("arguments")),
            schema=json.dumps(schemas[_name(call)], indent=2) if schemas.get(_name(call)) is not None else None,
        )
        for call in candidate_calls(response)
    ]


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _checked(call: dict[str, Any], raw: str, schema: Any) -> dict[str, Any]:
    """The agent's arguments for `call`, parsed and checked against the tool's schema."""
    label = f"{_name(call)} ({call.get('id', '')})"
    try:
        arguments = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"The arguments of {label} are not valid JSON: {exc}.", param="arguments") from None
    if not isinstance(arguments, dict):
        raise InvalidRequest(f"The arguments of {label} must be a JSON object.", param="arguments")
    if not isinstance(schema, dict):
        return arguments
    # Imported on the first edit of a tool call, not when the app starts (it is a twentieth of the import time).
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    validator_class = validator_for(schema, default=Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except SchemaError:
        return arguments  # the request's own schema is broken; the agent is not to blame for it
    error = next(iter(sorted(validator_class(schema).iter_errors(arguments), key=lambda e: list(e.path))), None)
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise InvalidRequest(
            f"The arguments of {label} do not match the tool's schema at {where}: {_short(error.message)}.",
            param="arguments",
        )
    return arguments


def edited(request: dict[str, Any], response: dict[str, Any], arguments: dict[str, str]) -> list[dict[str, Any]]:
    """The candidate's tool calls with the agent's arguments (call id -> JSON text), each checked; a call the
    agent sent no arguments for keeps the model's. `InvalidRequest` names the first call that fails."""
    calls = candidate_calls(response)
    known = {str(call.get("id", "")) for call in calls}
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise InvalidRequest(f"The answer has no tool call {unknown[0]!r}.", param="arguments")
    schemas = _schemas(request)
    result = []
    for call in calls:
        call_id = str(call.get("id", ""))
        function = dict(call.get("function") or {})
        if call_id in arguments:
            checked = _checked(call, arguments[call_id], schemas.get(_name(call)))
            function["arguments"] = json.dumps(checked, ensure_ascii=False, separators=(",", ":"))
        result.append({**call, "function": function})
    return result


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
