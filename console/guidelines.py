"""The team's guidelines: a Markdown file (`HITL_GUIDELINES_PATH`) shown on their own page and one key (`g`)
away on every review. Rendered with raw HTML off, so the file can hold no markup or script of its own; links
keep to the schemes markdown-it allows (no `javascript:`)."""

from __future__ import annotations

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
    """The guidelines as safe HTML; None when none are set. A file that cannot be read says so instead."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Markup("<p class='error'>The guidelines file cannot be read: {}.</p>").format(exc.__class__.__name__)
    return Markup(_MARKDOWN.render(text))  # raw HTML is off: everything from the file arrives escaped


@router.get("/guidelines", name="console_guidelines")
async def guidelines(request: Request, agent: CurrentAgent, runtime: RuntimeDep) -> Response:
    context = {"agent": agent, "guidelines": rendered(runtime.settings.guidelines_path)}
    return render(request, "guidelines.html", context)
