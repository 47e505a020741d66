"""The formats an export writes, by name, each a row builder over a record.

- `dpo` (default): TRL conversational preference, `prompt`, `chosen`, `rejected` as message lists; from edits
  and overrides.
- `dpo-standard`: TRL standard preference, the same as text; from edits and overrides.
- `kto`: TRL unpaired preference, `prompt`, `completion`, `label`; from every decision.
- `openai-preference`: `input.messages`, `preferred_output`, `non_preferred_output`; from edits and overrides.
- `sft`: chat SFT, `messages` (the prompt and the final answer); from approvals and corrections.
- `records`: the whole record with its provenance; from every decision.

KTO takes the final answer of every decision as desirable (`label: true`) and the candidate as undesirable
(`false`) when it was overridden or edited with a reason tag. Tool calls stay structured assistant messages
(`tool_calls`, arguments as the JSON string OpenAI sends) in every conversational format; the request's tools
travel as `tools`, a JSON string in the TRL formats (TRL decodes it; a column of differently shaped schemas
would not load) and a list in `openai-preference` (as OpenAI, Together and Fireworks take it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.datasets import rendering
from gateway.datasets.records import Record
from gateway.datasets.rendering import ChatTemplate
from gateway.errors import InvalidRequest


def _message(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if value is not None}


def _prompt(record: Record) -> list[dict[str, Any]]:
    return [_message(message) for message in record.prompt]


def _with_tools(row: dict[str, Any], record: Record) -> dict[str, Any]:
    if record.tools:
        row["tools"] = json.dumps(record.tools, ensure_ascii=False)
    return row


@dataclass(frozen=True)
class Options:
    """How rows are written: with a `metadata` column, and the chat template for the standard format."""

    with_metadata: bool = False
    template: ChatTemplate | None = None


def dpo(record: Record, usable_pair: bool, options: Options) -> list[dict[str, Any]]:
    if not record.paired or not usable_pair:
        return []
    row = {"prompt": _prompt(record), "chosen": [_message(record.final)], "rejected": [_message(record.candidate)]}
    return [_with_tools(row, record)]


def dpo_standard(record: Record, usable_pair: bool, options: Options) -> list[dict[str, Any]]:
    if not record.paired or not usable_pair:
        return []
    prompt = (
        options.template.prompt(_prompt(record), record.tools)
        if options.template
        else rendering.plain_prompt(_prompt(record))
    )
    return [
        {
            "prompt": prompt,
            "chosen": rendering.answer_text(record.final),
            "rejected": rendering.answer_text(record.candidate),
        }
    ]


def kto(record: Record, usable_pair: bool, options: Options) -> list[dict[str, Any]]:
    rows = [_with_tools({"prompt": _prompt(record), "completion": [_message(record.final)], "label": True}, record)]
    if record.candidate_is_negative and usable_pair:
        negative = {"prompt": _prompt(record), "completion": [_message(record.candidate)], "label": False}
        rows.append(_with_tools(negative, record))
    return rows


def openai_preference(record: Record, usable_pair: bool, options: Options) -> list[dict[str, Any]]:
    if not record.paired or not usable_pair:
        return []
    given: dict[str, Any] = {"messages": _prompt(record)}
    if record.tools:
        given["tools"] = record.tools
    return [
        {
            "input": given,
            "preferred_output": [_message(record.final)],
            "non_preferred_output": [_message(record.candidate)],
        }
    ]


def sft(record: Record, usable_pair: bool, options: Options) -> list[dict[str, Any]]:
    return [_with_tools({"messages": [*_prompt(record), _message(record.final)]}, record)]


def records(record: Record, usable_pair: bool, options: Options) -> list[dict[str, Any]]:
    return [
        {
            "prompt": _prompt(record),
            "tools": record.tools,
            "candidate": _message(record.candidate),
            "final": _message(record.final),
            "signals": record.signals,
            **record.provenance(),
        }
    ]


_MESSAGES = "list of messages {role, content, tool_calls?, ...}"
_ANSWER = "list of one assistant message {role, content, tool_calls?}"
_TOOLS = "string: the request's tools as JSON (absent without tools)"
_METADATA = "object: provenance, with --with-metadata (see `records`; signals as a JSON string)"
_DPO = {"prompt": _MESSAGES, "chosen": _ANSWER, "rejected": _ANSWER, "tools": _TOOLS, "metadata": _METADATA}
_STANDARD = {"prompt": "string", "chosen": "string", "rejected": "string", "metadata": _METADATA}
_KTO = {"prompt": _MESSAGES, "completion": _ANSWER, "label": "boolean", "tools": _TOOLS, "metadata": _METADATA}
_OPENAI = {
    "input": "object {messages: " + _MESSAGES + ", tools?: list of tools}",
    "preferred_output": _ANSWER,
    "non_preferred_output": _ANSWER,
    "metadata": _METADATA,
}
_SFT = {"messages": _MESSAGES + ", the last the assistant's final answer", "tools": _TOOLS, "metadata": _METADATA}
_RECORDS = {
    "prompt": _MESSAGES,
    "tools": "list of tools or null",
    "candidate": "assistant message: the model's answer",
    "final": "assistant message: the answer the client got",
    "signals": "object: the scorer's signals",
    "decision_id, review_id, exchange_id": "integer, string, string",
    "action, tags, comment, agent, tier, kind": "string, list of strings, string, string, string, hold|audit",
    "model, upstream_model, policy_version, calibrator": "strings",
    "confidence": "number or null",
    "asked_at, held_at, decided_at": "ISO 8601 timestamps",
}

Builder = Callable[[Record, bool, Options], list[dict[str, Any]]]


@dataclass(frozen=True)
class Format:
    name: str
    build: Builder
    summary: str
    paired: bool  # rows only from edits and overrides
    schema: dict[str, str]  # field -> type, as the manifest describes a row

    def rows(self, record: Record, usable_pair: bool, options: Options) -> list[dict[str, Any]]:
        built = self.build(record, usable_pair, options)
        if options.with_metadata and self.name != "records":
            provenance = {**record.provenance(), "signals": json.dumps(record.signals, ensure_ascii=False)}
            built = [{**row, "metadata": provenance} for row in built]
        return built


FORMATS = {
    found.name: found
    for found in (
        Format("dpo", dpo, "TRL DPO, conversational: prompt, chosen, rejected as messages", True, _DPO),
        Format("dpo-standard", dpo_standard, "TRL DPO, standard: prompt, chosen, rejected as text", True, _STANDARD),
        Format("kto", kto, "TRL KTO, unpaired: prompt, completion, label", False, _KTO),
        Format("openai-preference", openai_preference, "OpenAI-style preference", True, _OPENAI),
        Format("sft", sft, "chat SFT: messages (the prompt and the final answer)", False, _SFT),
        Format("records", records, "every decision with its provenance, signals included", False, _RECORDS),
    )
}
NAMES = tuple(FORMATS)


def named(name: str) -> Format:
    if name not in FORMATS:
        raise InvalidRequest(f"Unknown export format {name!r}; the formats are {', '.join(NAMES)}.", param="format")
    return FORMATS[name]
