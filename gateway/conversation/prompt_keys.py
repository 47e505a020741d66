"""The key that says two prompts are the same question: what deduplication and the train/test split go by.

Two prompts share a key when their messages have the same roles and the same words once case, punctuation and
runs of whitespace are set aside, and they offer the same tools (by name). So "Where is my refund?" and
"where is my  refund" are one prompt (a near-duplicate); a different system prompt or a different tool set is
another. The key is computed when a decision is made and stored with it (`decisions.prompt_key`), so an export
can sort by it in the database and stream.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

# Version 1 of the normalisation; a later change would store keys with a new prefix, never mix them.
VERSION = "p1"
_NOT_WORD = re.compile(r"[\W_]+")


def words(text: str) -> str:
    """`text` lower-cased, accents and punctuation kept apart from the words, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", folded).split())


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _tool_names(request: dict[str, Any]) -> list[str]:
    tools = request.get("tools") or request.get("functions") or []
    names = []
    for tool in tools:
        if isinstance(tool, dict):
            function = tool.get("function")
            names.append(str((function if isinstance(function, dict) else tool).get("name", "")))
    return sorted(names)


def prompt_key(request: dict[str, Any]) -> str:
    """The key of a chat request's prompt (its messages and tools): `p1-` and 40 hex digits."""
    messages = request.get("messages") or []
    shape = [
        [
            str(message.get("role", "")),
            words(_text(message.get("content"))),
            words(json.dumps(message.get("tool_calls"))),
        ]
        for message in messages
    ]
    canonical = json.dumps([shape, _tool_names(request)], ensure_ascii=False, separators=(",", ":"))
    return f"{VERSION}-{hashlib.sha256(canonical.encode()).hexdigest()[:40]}"
