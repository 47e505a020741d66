"""Checking what an agent wrote (a tool call's arguments, a structured answer) against the JSON Schema the
client's request declared. `problem` runs in the sandbox (`sandbox.py`): the schema is hostile input.

A `$ref` is resolved only within the schema itself and the JSON Schema meta-schemas: a reference to a URL or
a file is never fetched (it would send a request wherever the client pointed, and wait for as long as that
host stalls). A schema that is not valid JSON Schema, or that refers outside itself, is not held against the
agent: the value is then only checked to be of the kind the caller asks for.
"""

from __future__ import annotations

from typing import Any

# Longest part of a validation message shown to the agent: jsonschema quotes the offending value in full.
_SHOWN = 300


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _refuse(uri: str) -> Any:
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(uri)


def problem(schema: Any, value: Any) -> str | None:
    """Where and how `value` fails `schema`, or None when it meets it (or the schema cannot be used)."""
    if not isinstance(schema, dict):
        return None
    # Imported here, in the sandbox's worker, not when the app starts.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for
    from referencing import Registry
    from referencing.exceptions import Unresolvable

    validator_class = validator_for(schema, default=Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except SchemaError:
        return None  # the request's own schema is broken; the agent is not to blame for it
    validator = validator_class(schema, registry=Registry(retrieve=_refuse))  # type: ignore[call-arg]
    try:
        error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None)
    except Unresolvable:
        return None  # the schema refers outside itself, and that is never fetched
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
    return f"at {where}: {_short(error.message)}"
