"""Errors the gateway raises on purpose, and the one place that turns them into the OpenAI error shape.

    GatewayError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error
    ├── AuthenticationFailed          401 authentication_error / invalid_api_key
    ├── NotFound                      404 invalid_request_error
    │   └── ModelNotFound             404 model_not_found
    ├── Conflict                      409 conflict (e.g. a review already decided)
    ├── ReviewPending                 504 review_pending (the wait ran out and the tier answers with an error)
    ├── Forbidden                     403 permission_error
    ├── RateLimited                   429 rate_limit_error (the upstream's)
    ├── StorageUnavailable            503 storage_unavailable (the database is down or full; retry later)
    └── UpstreamError                 502 upstream_error
        └── UpstreamTimeout           504 upstream_timeout

Every /v1 response that is not a success is `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from gateway import requestid

log = logging.getLogger("hitl.errors")
CLIENT_GONE = 499  # the status nginx logs for a client that closed its connection first


class GatewayError(Exception):
    status_code = 500
    type = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        failure: str | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        # Raised for an upstream call: what went wrong (timeout, unreachable, rejected, rate_limited,
        # http_error, malformed) and the provider's HTTP status, for the failed exchange's record.
        self.failure = failure
        self.upstream_status = upstream_status

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """Headers the error's response carries besides the request id."""
        # The OpenAI SDK retries 409; a decided review will not change its mind.
        return {"x-should-retry": "false"} if self.status_code == 409 else {}


class InvalidRequest(GatewayError):
    status_code = 400
    type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status_code = 403
    type = "permission_error"


class NotFound(GatewayError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(GatewayError):
    status_code = 409
    type = "conflict"
    code = "conflict"


class ReviewPending(GatewayError):
    """A held answer's wait ran out and its tier answers with an error (`on_deadline: error`). Retrying
    would only make the client wait again: the answer comes by polling the review."""

    status_code = 504
    type = "review_pending"
    code = "review_pending"

    def __init__(self, review_id: str, poll_url: str, hitl_headers: dict[str, str]) -> None:
        super().__init__(
            f"The answer is held for review {review_id} and nobody has decided it yet. Fetch it from {poll_url}."
        )
        self.review_id = review_id
        self.poll_url = poll_url
        self.hitl_headers = hitl_headers

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"].update(review_id=self.review_id, poll_url=self.poll_url)
        return body

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false", **self.hitl_headers}


class RateLimited(GatewayError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        # The upstream's own word on when to come back, passed on as it said it (seconds or an HTTP date),
        # if it is one a header can carry.
        self.retry_after = retry_after if retry_after and retry_after.isprintable() and len(retry_after) < 64 else None

    def headers(self) -> dict[str, str]:
        return {"retry-after": self.retry_after} if self.retry_after else {}


class StorageUnavailable(GatewayError):
    """The database did not answer or refused a write (down, restarting, disk full): nothing was wrongly done and
    the same request may well work in a moment, so the client is told when to come back."""

    status_code = 503
    type = "api_error"
    code = "storage_unavailable"
    RETRY_AFTER = "5"

    def headers(self) -> dict[str, str]:
        return {"retry-after": self.RETRY_AFTER}


class UpstreamError(GatewayError):
    status_code = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


Shape = Callable[[GatewayError], dict[str, Any]]


def error_response(error: GatewayError, shape: Shape | None = None) -> JSONResponse:
    body = shape(error) if shape is not None else error.body()
    return JSONResponse(body, status_code=error.status_code, headers=error.headers())


def _first_param(exc: RequestValidationError) -> str | None:
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        if loc:
            return ".".join(loc)
    return None


def _route(request: Request) -> str:
    """The path of the route a request matched, for a log line: the route's own template, never the client's
    text (a path can carry anything, line breaks included)."""
    return str(getattr(request.scope.get("route"), "path", "-"))


# What a database that is down or full raises: SQLAlchemy's, and the drivers' own where a write goes around it.
STORAGE_ERRORS: tuple[type[Exception], ...] = (OperationalError, psycopg.OperationalError, sqlite3.OperationalError)


def install(app: FastAPI, shapes: dict[str, Shape] | None = None, served: str = "") -> None:
    """Register the handlers that keep every error in the OpenAI shape, or in the shape of the dialect whose path
    prefix `shapes` names (Anthropic's under /v1/messages); a 404 under /v1 names what is `served`."""
    shapes = shapes or {}

    def shaped(error: GatewayError, request: Request) -> JSONResponse:
        path = request.url.path
        return error_response(error, next((shape for prefix, shape in shapes.items() if path.startswith(prefix)), None))

    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return shaped(exc, request)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        return shaped(InvalidRequest(str(first.get("msg")), param=_first_param(exc)), request)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not request.url.path.startswith("/v1"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        error = GatewayError(str(exc.detail))
        error.status_code = exc.status_code
        error.type = "invalid_request_error" if exc.status_code < 500 else "api_error"
        error.code = "not_found" if exc.status_code == 404 else None
        if exc.status_code == 405:
            error.message = f"{request.method} {request.url.path} is not served. This gateway serves {served}."
        if exc.status_code == 404:
            error.message = f"Unknown path {request.url.path}. This gateway serves {served}."
        return shaped(error, request)

    async def on_storage_error(request: Request, exc: Exception) -> Response:
        # Handled here, not as an unexpected error: one line, no traceback, and the client's kept-alive connection
        # stays open (an unhandled error closes it, and the client's next request fails too).
        log.warning("storage_unavailable route=%s error=%s", _route(request), type(exc).__name__)
        return shaped(StorageUnavailable("The gateway's database is unavailable; retry shortly."), request)

    async def on_client_gone(request: Request, exc: Exception) -> Response:
        # The client hung up before its request had arrived whole: nothing of the gateway's failed, nothing was
        # asked of the upstream. One line, not a traceback; the response goes nowhere (499, nginx's name for it).
        log.info("client_disconnected request_id=%s path=%s", requestid.from_scope(request.scope), _route(request))
        return Response(status_code=CLIENT_GONE)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, _route(request))
        response = shaped(GatewayError("The gateway hit an internal error; it has been logged."), request)
        # This handler runs outside the request-id middleware, so it sets the header itself.
        request_id = requestid.from_scope(request.scope)
        if request_id:
            response.headers[requestid.HEADER] = request_id
        return response

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    for failure in STORAGE_ERRORS:
        app.add_exception_handler(failure, on_storage_error)
    app.add_exception_handler(Exception, on_unexpected)
