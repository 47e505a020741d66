"""The process's one HTTP client: upstream calls, self-checks and webhooks all go through it.

It is httpx's API on aiohttp's connections (httpx-aiohttp, the transport the OpenAI SDK offers): aiohttp reads
an 85 KB logprob answer in C where httpcore parses it in Python, about a third less CPU per upstream call. It
keeps what httpx's own transport did: proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (read when the client
is made), certifi's CAs (or `SSL_CERT_FILE`), up to 200 connections, and no .netrc.

A connection kept alive can be closed by the server as it is reused (its idle timeout ran out first). httpcore
looks before reusing one; aiohttp retries only idempotent methods. So idle connections are let go before the
usual server's timeout, and a request that a connection dropped before any answer is sent once more, as the
OpenAI SDK itself does on a connection error.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import httpx
from httpx._utils import get_environment_proxies  # what httpx itself mounts from the environment; httpx is pinned
from httpx_aiohttp import AiohttpTransport

# Idle connections are let go after 4 s, before the 5 s idle timeout common to upstream servers (uvicorn, vLLM,
# llama.cpp) closes them from the other end while a request goes out on one.
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=4.0)


def _session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=LIMITS.max_connections or 0,
        keepalive_timeout=LIMITS.keepalive_expiry or 0,
        ssl=httpx.create_ssl_context(),
    )
    return aiohttp.ClientSession(connector=connector)


class _Transport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.TransportError as exc:
            if not _dropped(exc.__cause__):
                raise
        return await super().handle_async_request(request)


def _dropped(cause: BaseException | None) -> bool:
    """Whether the connection was dropped under a request before it was answered (not refused: a refused
    connection is a new one, so trying again at once would only be refused again)."""
    lost = isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
    return lost and not isinstance(cause, aiohttp.ClientConnectorError)


def _proxied() -> dict[str, httpx.AsyncBaseTransport | None]:
    """The proxies the environment names, as httpx mounts, read once: the mounts httpx's own transport makes
    (a host in `NO_PROXY` maps to None: no proxy). aiohttp's `trust_env` would read them again, and look for a
    .netrc, in a worker thread on every request, and refuse a request whose host the .netrc names, since the
    bearer token is already there."""
    return {
        pattern: _Transport(client=_session, proxy=httpx.Proxy(url)) if url else None
        for pattern, url in get_environment_proxies().items()
    }


def client() -> httpx.AsyncClient:
    """A client for the app's lifetime (close it with `aclose`, or use it as an async context manager)."""
    return httpx.AsyncClient(limits=LIMITS, transport=_Transport(client=_session), mounts=_proxied())


class Endpoint:
    """One URL the request path posts JSON to (an upstream's chat completions), its requests handed straight to
    the transport the client picks for that URL (the proxy the environment names, or none).

    The client's own layer around each request costs, on the release path, about as much CPU as aiohttp's whole
    exchange: it parses and merges the URL, merges the headers, builds a cookie-jar request, and looks for auth
    and redirects. Here the URL is parsed and the headers (the client's own, then these) merged once. Cookies
    are neither kept nor sent: an upstream's cookie, set on one client's request, is not carried on the next
    client's. An answer is read whole before `post` returns, as the client's `post` does.
    """

    def __init__(self, client: httpx.AsyncClient, url: str, headers: Mapping[str, str], timeout: float) -> None:
        self.url = httpx.URL(url)
        self._headers = httpx.Headers({**client.headers, "content-type": "application/json", **headers})
        self._transport = client._transport_for_url(self.url)  # the client's own choice; httpx is pinned
        self._timeout = httpx.Timeout(timeout).as_dict()

    async def post(self, content: bytes) -> httpx.Response:
        """POST `content` (JSON); the answer, read. Raises what the client's `post` raises (`httpx.HTTPError`)."""
        response = await self.open(content)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def open(self, content: bytes) -> httpx.Response:
        """POST `content` (JSON); the answer with its body still to come (a stream), for the caller to read and
        close (`aclose`)."""
        request = httpx.Request(
            "POST", self.url, headers=self._headers, content=content, extensions={"timeout": self._timeout}
        )
        return await self._transport.handle_async_request(request)


def failure(exc: httpx.HTTPError) -> str:
    """What went wrong, by name: aiohttp's own error when it caused httpx's (`ClientConnectorError` for a
    refused connection, not the `ConnectTimeout` it is reported as)."""
    cause = exc.__cause__
    return type(cause if isinstance(cause, aiohttp.ClientError) else exc).__name__


def timed_out(exc: httpx.TimeoutException) -> bool:
    """Whether a timeout really was one: httpx-aiohttp reports a refused or dropped connection as
    `ConnectTimeout` too, with aiohttp's own error as the cause."""
    cause = exc.__cause__
    return not isinstance(cause, aiohttp.ClientError) or isinstance(cause, TimeoutError)
