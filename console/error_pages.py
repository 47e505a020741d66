"""Console failures as pages, not JSON: an error page with the layout and a way back, or, for an htmx
request, a toast swapped into the page the agent is on. Requests outside the console keep the gateway's
OpenAI-shaped errors: each handler here hands them to the one it replaces."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from console.rendering import HX_RESWAP, HX_RETARGET, render, wants_fragment
from gateway.errors import GatewayError

log = logging.getLogger("hitl.console")
Handler = Callable[[Request, Exception], Awaitable[Response]]


def _described(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, GatewayError):
        return exc.status_code, exc.message
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:])
        return 400, f"Invalid {where or 'request'}: {first.get('msg', 'not understood')}."
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return 404, "There is no such page in the console."
        return exc.status_code, str(exc.detail)
    log.error("unhandled error on a console page", exc_info=exc)
    return 500, "The console hit an internal error; it has been logged."


def error_response(request: Request, exc: Exception) -> Response:
    status, message = _described(exc)
    if wants_fragment(request):
        # Whatever the htmx request meant to swap, the toast is what changes.
        headers = {HX_RETARGET: "#toast", HX_RESWAP: "outerHTML"}
        return render(request, "partials/_toast.html", {"message": message}, status_code=status, headers=headers)
    # Back where the agent came from, if that was a console page of this site; else the queue.
    referer = request.headers.get("referer", "")
    back = referer if referer.startswith(f"{request.base_url}console/") else "/console/"
    context = {"message": message, "status": status, "back": back}
    return render(request, "error.html", context, status_code=status)


def install(app: FastAPI, prefix: str) -> None:
    for kind in (GatewayError, RequestValidationError, HTTPException, Exception):
        # The gateway's handlers (errors.install) are all coroutines.
        fallback = cast(Handler, app.exception_handlers[kind])

        async def handle(request: Request, exc: Exception, fallback: Handler = fallback) -> Response:
            if not request.url.path.startswith(prefix):
                return await fallback(request, exc)
            return error_response(request, exc)

        app.add_exception_handler(kind, handle)
