"""One place decides between a whole page and an htmx fragment, and knows the `HX-*` header names."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from jinja2_fragments.fastapi import Jinja2Blocks
from starlette.responses import Response

from gateway.models import aware
from gateway.proxy.chat import question_of

HX_REQUEST = "HX-Request"

templates = Jinja2Blocks(directory=str(Path(__file__).with_name("templates")))


def _age(moment: datetime) -> str:
    seconds = int((datetime.now(UTC) - aware(moment)).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


templates.env.filters["age"] = _age
templates.env.filters["aware"] = aware
templates.env.filters["question"] = question_of
templates.env.filters["percent"] = _percent


def render(
    request: Request, name: str, context: dict[str, Any], *, block: str | None = None, status_code: int = 200
) -> Response:
    """The page `name`, or only its `block` when htmx asks for a fragment."""
    context = {"csrftoken": request.scope.get("csrftoken", lambda: "")(), **context}
    if block and request.headers.get(HX_REQUEST) == "true":
        response = templates.TemplateResponse(request, name, context, block_name=block, status_code=status_code)
    else:
        response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["Vary"] = HX_REQUEST
    return response


def render_partial(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> Response:
    """A partial on its own, for routes only htmx calls (the claim banner, the diff)."""
    context = {"csrftoken": request.scope.get("csrftoken", lambda: "")(), **context}
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["Vary"] = HX_REQUEST
    return response
