"""Diffs of what an agent changed: word by word for the console's live preview, line by line for the audit
trail."""

from __future__ import annotations

import difflib
import re

_WORDS = re.compile(r"\s+|[^\s]+")


def segments(before: str, after: str) -> list[tuple[str, str]]:
    """A word-level inline diff as (`same` | `del` | `ins`, text) segments; the template escapes the text."""
    old, new = _WORDS.findall(before), _WORDS.findall(after)
    found: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            found.append(("same", "".join(old[i1:i2])))
            continue
        if i2 > i1:
            found.append(("del", "".join(old[i1:i2])))
        if j2 > j1:
            found.append(("ins", "".join(new[j1:j2])))
    return found


def unified(before: str, after: str) -> str:
    """A unified diff for the audit trail: what the agent changed."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "candidate", "sent", lineterm="", n=1)
    return "\n".join(lines)
