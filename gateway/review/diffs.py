"""Diffs of what an agent changed: word by word for the console's live preview, line by line for the audit
trail. Both run in the review desk's sandbox: their cost grows with texts the agent and the model wrote."""

from __future__ import annotations

import difflib
import re

from rapidfuzz.distance import Indel

_WORDS = re.compile(r"\s+|[^\s]+")


def segments(before: str, after: str) -> list[tuple[str, str]]:
    """A word-level inline diff as (`same` | `del` | `ins`, text) segments, each change's removed words before
    its added ones; the template escapes the text."""
    old, new = _WORDS.findall(before), _WORDS.findall(after)
    # rapidfuzz's bit-parallel edit distance: a 300-word rewrite takes well under a millisecond, where difflib's
    # matcher took seconds on the same words.
    ops = list(Indel.opcodes(old, new))
    found: list[tuple[str, str]] = []
    removed: list[str] = []
    added: list[str] = []

    def changed() -> None:
        if removed:
            found.append(("del", "".join(removed)))
        if added:
            found.append(("ins", "".join(added)))
        removed.clear()
        added.clear()

    for index, op in enumerate(ops):
        if op.tag == "equal":
            same = "".join(old[op.src_start : op.src_end])
            if (removed or added) and not same.strip() and index + 1 < len(ops):
                removed.append(same)  # a space between two changed words belongs to the change
                added.append(same)
                continue
            changed()
            found.append(("same", same))
            continue
        removed.extend(old[op.src_start : op.src_end])
        added.extend(new[op.dest_start : op.dest_end])
    changed()
    return found


def unified(before: str, after: str) -> str:
    """A unified diff for the audit trail: what the agent changed."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "candidate", "sent", lineterm="", n=1)
    return "\n".join(lines)
