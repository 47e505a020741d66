"""The agents' web console, served by the gateway's app under /console.

The gateway finds it through the `hitl_gateway.plugins` entry point and calls `install(app, settings)`.
"""

from __future__ import annotations

from pathlib import Path

from asgi_csrf import asgi_csrf
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Scope

from console import auth, error_pages, exports, guidelines, history, insights, queue, review, routes, team, webhooks
from console.guard import ConsoleGuard, ConsoleOnly
from console.rendering import make_templates
from gateway.models import wellformed_id
from gateway.settings import Settings

PREFIX = "/console"
STATIC = Path(__file__).with_name("static")


def _not_console(scope: Scope) -> bool:
    return not str(scope.get("path", "")).startswith(PREFIX)


def install(app: FastAPI, settings: Settings) -> None:
    secret = app.state.secret_key
    app.state.console_templates = make_templates()
    app.state.console_templates.env.globals.update(
        alert_seconds=settings.alert_seconds, undo_seconds=settings.undo_seconds, wellformed_id=wellformed_id
    )
    for module in (routes, queue, review, history, webhooks, exports, team, guidelines, insights):
        app.include_router(module.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")

    async def login_required(request: Request, exc: Exception) -> Response:
        return RedirectResponse(f"{PREFIX}/login?next={request.url.path}", status_code=303)

    app.add_exception_handler(auth.LoginRequired, login_required)
    error_pages.install(app, PREFIX)

    def console_stack(inner: ASGIApp, secure: bool) -> ASGIApp:
        session = SessionMiddleware(
            inner,
            secret_key=secret,
            session_cookie="hitl_session",
            max_age=settings.session_max_age,
            path=PREFIX,
            same_site="lax",
            https_only=secure,
        )
        # CSRF wraps the session: a forged POST is refused before anything runs.
        csrf = asgi_csrf(
            session, signing_secret=secret, skip_if_scope=_not_console, cookie_path=PREFIX, cookie_secure=secure
        )
        return ConsoleGuard(csrf, prefix=PREFIX)

    app.add_middleware(ConsoleOnly, prefix=PREFIX, wrap=console_stack)
