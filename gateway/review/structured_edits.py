"""An agent's text for a structured answer: when the client asked for JSON (`response_format` of type
`json_object` or `json_schema`), what the agent sends must parse, and meet the schema the request declared
(checked in the sandbox, as a tool call's arguments are), or the client's parser would fail on it."""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import InvalidRequest
from gateway.review import schemas
from gateway.review.sandbox import Sandbox

_JSON_TYPES = ("json_object", "json_schema")


async def check(request: dict[str, Any], text: str, sandbox: Sandbox) -> None:
    """`InvalidRequest` when `text` is not what the request's `response_format` asks for; nothing to check
    when it asks for plain text."""
    form = request.get("response_format")
    kind = form.get("type") if isinstance(form, dict) else None
    if kind not in _JSON_TYPES:
        return
    asked = f"The client asked for a JSON answer (response_format {kind})"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"{asked}, and the text is not valid JSON: {exc}.", param="text") from None
    if kind == "json_object" and not isinstance(value, dict):
        raise InvalidRequest(f"{asked}: the text must be a JSON object.", param="text")
    spec = form.get("json_schema") if isinstance(form, dict) else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return
    what = "Checking the answer against the client's schema"
    found = await sandbox.run(schemas.problem, schema, value, what=what)
    if found is not None:
        raise InvalidRequest(f"{asked}, and the text does not match its schema {found}.", param="text")
