"""The team's guidelines: a Markdown file (`HITL_GUIDELINES_PATH`) shown on their own page and one key (`g`)
away on every review. Rendered with raw HTML off, so the file can hold no markup or script of its own; links
keep to the schemes markdown-it allows (no `javascript:`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markdown_it import MarkdownIt
from markupsafe import Markup

from console.auth import CurrentAgent
from console.rendering import render
from gateway.deps import RuntimeDep

router = APIRouter(prefix="/console", include_in_schema=False)

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def rendered(path: Path | None) -> Markup | None:
    """The guidelines as safe HTML; None when none are set. A file that cannot be read says so instead. Read
    and rendered again only when the file changes (every review page shows them)."""
    if path is None:
        return None
    try:
        changed = path.stat().st_mtime_ns
        return _rendered(path, changed)
    except (OSError, UnicodeDecodeError) as exc:
        return Markup("<p class='error'>The guidelines file cannot be read: {}.</p>").format(exc.__class__.__name__)


@lru_cache(maxsize=4)
def _rendered(path: Path, changed: int) -> Markup:
    """`changed` (the file's modification time) is the cache's key: a new version renders anew."""
    return Markup(_MARKDOWN.render(path.read_text(encoding="utf-8")))  # raw HTML off: the file arrives escaped


@router.get("/guidelines", name="console_guidelines")
async def guidelines(request: Request, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    context = {"agent": agent, "guidelines": rendered(runtime.settings.guidelines_path)}
    return render(request, "guidelines.html", context)
