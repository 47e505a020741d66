"""One place decides between a whole page and an htmx fragment, and knows the `HX-*` header names.

The Jinja environment is made by `make_templates()` when the console is installed on an app, never at
import time, and handed to `render()` through the app's state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from jinja2_fragments.fastapi import Jinja2Blocks
from starlette.responses import Response

from gateway.conversation.answers import HitlStatus
from gateway.conversation.chat import question_of
from gateway.models import DeadlineOutcome, Dialect, EventKind, ReviewKind, ReviewStatus
from gateway.review import explanations

HX_REQUEST = "HX-Request"
HX_HISTORY_RESTORE = "HX-History-Restore-Request"  # htmx lost its history cache: it needs the whole page
HX_RETARGET = "HX-Retarget"
HX_RESWAP = "HX-Reswap"
TEMPLATES = Path(__file__).with_name("templates")
# The API a held answer's client spoke, as the review page labels it: the decision goes back in the same one.
DIALECT_LABELS = {
    Dialect.CHAT: "Chat Completions",
    Dialect.RESPONSES: "Responses API",
    Dialect.MESSAGES: "Anthropic Messages",
}
# What a waiting client gets when its deadline passes, as the review page and the audit trail say it.
DEADLINE_OUTCOMES = {
    DeadlineOutcome.PLACEHOLDER: "the placeholder",
    DeadlineOutcome.REFUSAL: "a refusal",
    DeadlineOutcome.ERROR: "an error naming this review",
    DeadlineOutcome.RELEASE: "the model's answer, unreviewed",
}


def _age(moment: datetime) -> str:
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def sla_level(since: datetime, target: float | None, now: datetime) -> str:
    """`ok`, `near` (75% of the tier's target wait gone) or `over`; "" when the tier has no target."""
    if not target:
        return ""
    share = (now - since).total_seconds() / target
    return "over" if share >= 1 else "near" if share >= 0.75 else "ok"


def make_templates() -> Jinja2Blocks:
    """The console's Jinja environment, with its filters and the state enums templates compare against."""
    templates = Jinja2Blocks(directory=str(TEMPLATES))
    templates.env.filters.update(
        age=_age,
        question=question_of,
        percent=_percent,
        why_held=explanations.why_held,
        why_held_briefly=explanations.why_held_briefly,
    )
    templates.env.globals.update(sla_level=sla_level)
    templates.env.globals.update(
        ReviewStatus=ReviewStatus,
        ReviewKind=ReviewKind,
        EventKind=EventKind,
        HitlStatus=HitlStatus,
        DEADLINE_OUTCOMES=DEADLINE_OUTCOMES,
        DIALECT_LABELS=DIALECT_LABELS,
    )
    return templates


def wants_fragment(request: Request) -> bool:
    """An htmx request for part of a page (not a history restore, which needs the whole page)."""
    return request.headers.get(HX_REQUEST) == "true" and request.headers.get(HX_HISTORY_RESTORE) != "true"


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The template `name` (a page, or a partial that stands alone), or only its `block` when htmx asks
    for a fragment of the page."""
    templates: Jinja2Blocks = request.app.state.console_templates
    context = {"csrftoken": request.scope.get("csrftoken", lambda: "")(), **context}
    if block is not None and wants_fragment(request):
        response = templates.TemplateResponse(request, name, context, block_name=block, status_code=status_code)
    else:
        response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(headers or {})
    response.headers["Vary"] = f"{HX_REQUEST}, {HX_HISTORY_RESTORE}"
    return response
