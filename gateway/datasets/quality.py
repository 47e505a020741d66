"""Which pairs teach nothing: an edit that only changes whitespace or case, or that changes less than a
share of the answer (normalized Levenshtein distance, `rapidfuzz`). Such a pair is dropped from the paired
formats, and its candidate is not used as a negative; the record stays an example of a good answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Levenshtein

from gateway.datasets.records import Record

WHITESPACE_OR_CASE = "whitespace_or_case_only"
SMALL_EDIT = "edit_below_min_ratio"


def _answer(message: dict[str, Any]) -> str:
    """What an answer says, as text: its content, then its tool calls (name and arguments) if any."""
    calls = [
        [call.get("function", {}).get("name"), call.get("function", {}).get("arguments")]
        for call in message.get("tool_calls") or []
        if isinstance(call, dict)
    ]
    text = str(message.get("content") or message.get("refusal") or "")
    return text + ("\n" + json.dumps(calls, ensure_ascii=False) if calls else "")


@dataclass(frozen=True)
class Quality:
    min_edit_ratio: float = 0.0  # drop pairs whose answers differ by less than this share (0 to 1)

    def edit_ratio(self, record: Record) -> float:
        return float(Levenshtein.normalized_distance(_answer(record.candidate), _answer(record.final)))

    def problem(self, record: Record) -> str | None:
        """Why the record's pair teaches nothing, or None when it is a real correction (or not a pair)."""
        if not record.paired:
            return None
        before, after = _answer(record.candidate), _answer(record.final)
        if " ".join(before.casefold().split()) == " ".join(after.casefold().split()):
            return WHITESPACE_OR_CASE
        if self.min_edit_ratio > 0 and self.edit_ratio(record) < self.min_edit_ratio:
            return SMALL_EDIT
        return None
