"""A conversational prompt as text, for the standard (non-conversational) formats: with the model's chat
template when one is given (a Jinja template, or a `tokenizer_config.json` holding `chat_template`), rendered
in a sandbox as Hugging Face tokenizers do; else the plain rendering below.

Plain rendering: each message on its own paragraph as `Role: text` (System, User, Assistant, Tool); an
assistant's tool calls as `Assistant calls name(arguments)` lines; a tool result as `Tool (call id): text`;
the prompt ends with `Assistant:` so the answer follows it. An answer (chosen, rejected, completion) is its
text; tool calls in an answer are written as their JSON list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.errors import InvalidRequest


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for call in message.get("tool_calls") or [] if isinstance(call, dict)]


def plain_prompt(messages: list[dict[str, Any]]) -> str:
    paragraphs = []
    for message in messages:
        role = str(message.get("role", "user"))
        if role == "tool":
            paragraphs.append(f"Tool ({message.get('tool_call_id', '')}): {_text(message.get('content'))}")
            continue
        lines = [f"{role.capitalize()}: {_text(message.get('content'))}".rstrip()] if message.get("content") else []
        for call in _calls(message):
            function = call.get("function") or {}
            lines.append(f"{role.capitalize()} calls {function.get('name')}({function.get('arguments', '')})")
        paragraphs.append("\n".join(lines) or f"{role.capitalize()}:")
    return "\n\n".join([*paragraphs, "Assistant:"])


def answer_text(message: dict[str, Any]) -> str:
    """An answer as text: its content (or refusal), then its tool calls as a JSON list."""
    text = _text(message.get("content")) or _text(message.get("refusal"))
    calls = _calls(message)
    if not calls:
        return text
    listed = json.dumps(calls, ensure_ascii=False)
    return f"{text}\n{listed}" if text else listed


class ChatTemplate:
    """A model's chat template, loaded once and rendered per prompt."""

    def __init__(self, source: str, name: str = "chat template") -> None:
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = self._raise
        environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
        self.name = name
        try:
            self.template = environment.from_string(source)
        except TemplateError as exc:
            raise InvalidRequest(f"The {name} is not a valid Jinja template: {exc}", param="chat_template") from None

    @staticmethod
    def _raise(message: str) -> None:
        raise TemplateError(message)

    @classmethod
    def load(cls, path: Path) -> ChatTemplate:
        """A `.jinja` file, or a `tokenizer_config.json` whose `chat_template` is the template."""
        try:
            source = path.read_text()
        except OSError as exc:
            raise InvalidRequest(
                f"Cannot read the chat template {path}: {exc.strerror}", param="chat_template"
            ) from None
        if path.suffix == ".json":
            try:
                found = json.loads(source).get("chat_template")
            except (ValueError, AttributeError):
                found = None
            if not isinstance(found, str):
                raise InvalidRequest(f"{path} has no `chat_template` string.", param="chat_template")
            source = found
        return cls(source, f"chat template {path.name}")

    def prompt(self, messages: list[dict[str, Any]], tools: list[Any] | None) -> str:
        try:
            return self.template.render(messages=messages, tools=tools, add_generation_prompt=True)
        except TemplateError as exc:
            raise InvalidRequest(f"The {self.name} failed on a prompt: {exc}", param="chat_template") from None
