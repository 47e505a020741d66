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
SAFE = {"GET", "HEAD", "OPTIONS", "TRACE"}
NO_TOKEN = "This form's security token is missing (cookies off, or the form came from another site). Reload the page."
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
        headers = Headers(scope=scope)
        if headers.get("content-type", "").startswith("multipart/"):
            refusal = PlainTextResponse("The console takes form posts, not multipart bodies.", status_code=415)
            await refusal(scope, receive, self._with_headers(scope, send))
            return
        if scope["method"] not in SAFE and "cookie" not in headers:
            # asgi-csrf lets a POST without cookies through (nothing to ride on, it reasons); but a cross-site
            # login form has none either, and would sign a victim in as the attacker. Every console form comes
            # from a console page, which set the CSRF cookie: without one, the post is refused.
            refusal = PlainTextResponse(NO_TOKEN, status_code=403)
            await refusal(scope, receive, self._with_headers(scope, send))
            return
        # The console authenticates by its session alone. asgi-csrf skips its check for any request carrying
        # `Authorization: Bearer`, so that header never reaches it (or anything else) on a console path.
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]}
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
    no header rewriting for a request that has no use for them.

    The stack comes in two: one whose cookies are `Secure`, for requests that arrived over https (directly, or
    through a trusted proxy that said so: uvicorn sets the scheme from its X-Forwarded-Proto), one for plain
    http (a laptop's `hitl serve`)."""

    def __init__(self, app: ASGIApp, prefix: str, wrap: Callable[[ASGIApp, bool], ASGIApp]) -> None:
        self.app = app
        self.plain = wrap(app, False)
        self.secure = wrap(app, True)
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if path == self.prefix or path.startswith(self.prefix + "/"):
            console = self.secure if scope.get("scheme") in ("https", "wss") else self.plain
            await console(scope, receive, send)
        else:
            await self.app(scope, receive, send)
