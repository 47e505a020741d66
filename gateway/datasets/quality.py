"""Which pairs teach nothing: an edit that only changes whitespace or case, or that changes less than a
share of the answer (normalized Levenshtein distance, `rapidfuzz`). Such a pair is dropped from the paired
formats, and its candidate is not used as a negative; the record stays an example of a good answer."""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from gateway.datasets.records import Record
from gateway.datasets.rendering import answer_text

WHITESPACE_OR_CASE = "whitespace_or_case_only"
SMALL_EDIT = "edit_below_min_ratio"


@dataclass(frozen=True)
class Quality:
    min_edit_ratio: float = 0.0  # drop pairs whose answers differ by less than this share (0 to 1)

    def edit_ratio(self, record: Record) -> float:
        return float(Levenshtein.normalized_distance(answer_text(record.candidate), answer_text(record.final)))

    def problem(self, record: Record) -> str | None:
        """Why the record's pair teaches nothing, or None when it is a real correction (or not a pair)."""
        if not record.paired:
            return None
        before, after = answer_text(record.candidate), answer_text(record.final)
        if " ".join(before.casefold().split()) == " ".join(after.casefold().split()):
            return WHITESPACE_OR_CASE
        if self.min_edit_ratio > 0 and self.edit_ratio(record) < self.min_edit_ratio:
            return SMALL_EDIT
        return None
