"""The console's outer guard: its middlewares (session, CSRF, these headers) for console paths only, security
headers on every console response, and no multipart bodies.

The Content-Security-Policy allows scripts from our own origin only: no inline script, no eval, so
markup that slips into a page cannot run. The console takes no file uploads, and asgi-csrf 0.11's
multipart parser fails on python-multipart 0.0.34 (a 500), so multipart requests get a 415 first."""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class ConsoleGuard:
    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if Headers(scope=scope).get("content-type", "").startswith("multipart/"):
            refusal = PlainTextResponse("The console takes form posts, not multipart bodies.", status_code=415)
            await refusal(scope, receive, self._with_headers(scope, send))
            return
        await self.app(scope, receive, self._with_headers(scope, send))

    @staticmethod
    def _with_headers(scope: Scope, send: Send) -> Send:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        return with_headers


class ConsoleOnly:
    """Send console paths through the console's middleware stack (`wrap` of the app), and everything else (the
    API, on the request path of every chatbot) straight to the app: no session cookie parsing, no CSRF wrapper,
    no header rewriting for a request that has no use for them."""

    def __init__(self, app: ASGIApp, prefix: str, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        self.app = app
        self.console = wrap(app)
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if path == self.prefix or path.startswith(self.prefix + "/"):
            await self.console(scope, receive, send)
        else:
            await self.app(scope, receive, send)
