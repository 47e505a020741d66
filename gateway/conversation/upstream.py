"""Upstream adapters: where candidate answers come from.

Every adapter takes an OpenAI chat-completions body and returns an OpenAI `chat.completion` dict, or
raises an `UpstreamError`. Servers that speak Chat Completions, the Responses API or Anthropic Messages take the
lean httpx path, the last two through their translation (`responses_upstream.py`, `messages_upstream.py`);
litellm, which costs tens of milliseconds of CPU per logprob response, is only used for providers that need it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

import httpx
import orjson

from gateway import http
from gateway.conversation import bundled, messages_upstream, responses_upstream
from gateway.conversation.bundled import local_model_available
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, RateLimited, UpstreamError, UpstreamTimeout
from gateway.settings import LocalModelSettings, Settings, UpstreamSettings
from gateway.workers import WorkerProcess

log = logging.getLogger("hitl.upstream")

_DONE = object()  # an upstream stream's `data: [DONE]`
# Client fields that make no sense upstream: the gateway always buffers and replays streams itself.
_GATEWAY_ONLY = ("hitl", "stream", "stream_options")


class Upstream(Protocol):
    name: str
    model: str
    logprobs: bool
    provider: str  # who answers, as traces name it (`gen_ai.provider.name`)
    streams: bool  # whether `stream` gives the answer as it is generated

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The answer's `chat.completion.chunk`s as the upstream generates them (only when `streams`)."""
        ...

    def close(self) -> None:
        """Free what the adapter holds beyond the shared HTTP client."""


def _checked(data: Any, name: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise UpstreamError(f"Upstream {name!r} returned a body that is not a chat.completion.", failure="malformed")
    return data


def _chat_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    return {**body, "model": model}


class _Api(NamedTuple):
    """How a server over httpx is spoken to: where, the request in its terms, its reply as a chat completion."""

    path: str
    request: Callable[[dict[str, Any], str], dict[str, Any]]
    completion: Callable[[Any, str], dict[str, Any]]
    # Its stream's events as chat chunks (built per stream, named by the upstream); None: they are chat chunks.
    chunks: Callable[[str], Callable[[Any], list[dict[str, Any]]]] | None
    stream_options: dict[str, Any]  # what a streamed request adds


_APIS = {
    "chat": _Api(
        "/chat/completions", _chat_request, _checked, None, {"stream": True, "stream_options": {"include_usage": True}}
    ),
    "responses": _Api(
        "/responses",
        responses_upstream.request,
        responses_upstream.completion,
        responses_upstream.Chunks,
        {"stream": True},
    ),  # fmt: skip
    "messages": _Api(
        "/messages",
        messages_upstream.request,
        messages_upstream.completion,
        messages_upstream.Chunks,
        {"stream": True},
    ),  # fmt: skip
}


def _headers(config: UpstreamSettings) -> dict[str, str]:
    key = config.api_key.get_secret_value() if config.api_key else None
    if config.api == "messages":  # Anthropic's way: the key as x-api-key, and the version it speaks
        return {"anthropic-version": messages_upstream.VERSION, **({"x-api-key": key} if key else {})}
    return {"Authorization": f"Bearer {key}"} if key else {}


def _upstream_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except ValueError:
        pass
    return response.text[:300] or response.reason_phrase


def _as_is(chunk: Any) -> tuple[Any]:
    return (chunk,)


async def _lines(response: httpx.Response) -> AsyncIterator[bytes]:
    """A streamed body's lines as they come, as bytes (no text decoding on the way)."""
    pending = b""
    async for received in response.aiter_bytes():
        *lines, pending = (pending + received).split(b"\n")
        for line in lines:
            yield line
    yield pending  # a last event without its line break


class OpenAICompatible:
    """Any server over httpx: OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp, Together, Groq, ...) by
    default, or natively the Responses API or Anthropic Messages (`api`)."""

    def __init__(self, config: UpstreamSettings, client: httpx.AsyncClient) -> None:
        self.name = config.name
        self.model = config.model
        self.logprobs = config.logprobs and config.api != "messages"  # Messages has none to give
        # The API it speaks, whoever runs it (`gen_ai.provider.name`).
        self.provider = "anthropic" if config.api == "messages" else "openai"
        self._timeout = config.timeout
        self._api = _APIS[config.api]
        self.streams = True
        url = (config.api_base or "").rstrip("/") + self._api.path
        self._endpoint = http.Endpoint(client, url, _headers(config), config.timeout)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = self._api.request({k: v for k, v in body.items() if k not in _GATEWAY_ONLY}, self.model)
        with self._failures():
            response = await self._endpoint.post(orjson.dumps(payload))
        status = response.status_code
        if status >= 400:
            raise self._refused(response)
        try:
            data = orjson.loads(response.content)  # an 85 KB logprob body: several times faster than json
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"Upstream {self.name!r} returned a body that is not JSON.", failure="malformed", upstream_status=status
            ) from None
        return self._api.completion(data, self.name)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The answer as the upstream streams it: its `chat.completion.chunk`s as they arrive, usage in the last."""
        payload = self._api.request({k: v for k, v in body.items() if k not in _GATEWAY_ONLY}, self.model)
        payload.update(self._api.stream_options)
        read = self._api.chunks(self.name) if self._api.chunks is not None else _as_is
        with self._failures():
            response = await self._endpoint.open(orjson.dumps(payload))
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._refused(response)
                async for line in _lines(response):
                    if (event := self._chunk(line)) is _DONE:
                        return
                    if event is not None:
                        for chunk in read(event):
                            yield chunk
            finally:
                await response.aclose()

    def _chunk(self, line: bytes) -> Any:
        """The chunk an SSE line carries; None for a line that carries none (comments such as keep-alives, event
        names, the blank line between events), `_DONE` for the end."""
        if not line.startswith(b"data:"):
            return None
        data = line[5:].strip()
        if data == b"[DONE]":
            return _DONE
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"Upstream {self.name!r} streamed an event that is not JSON.", failure="malformed"
            ) from None

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """httpx's errors as the gateway's: a timeout that was one, or an upstream that could not be reached."""
        try:
            yield
        except httpx.TimeoutException as exc:
            if not http.timed_out(exc):
                raise self._unreachable(http.failure(exc)) from None
            raise UpstreamTimeout(
                f"Upstream {self.name!r} did not answer within {self._timeout:g} s.", failure="timeout"
            ) from None
        except httpx.HTTPError as exc:
            raise self._unreachable(http.failure(exc)) from None

    def _refused(self, response: httpx.Response) -> GatewayError:
        """The upstream's error answer (read) as the gateway's error: the client's to fix, a rate limit, or a
        failure."""
        status = response.status_code
        message = _upstream_message(response)
        if status in (400, 404, 422):
            # The client's request was wrong for this model (bad tool schema, bad parameter): theirs to fix.
            return InvalidRequest(
                f"Upstream {self.name!r} rejected the request: {message}", failure="rejected", upstream_status=status
            )
        if status == 429:
            return RateLimited(
                f"Upstream {self.name!r} is rate limiting: {message}",
                failure="rate_limited",
                upstream_status=status,
                retry_after=response.headers.get("retry-after"),
            )
        return UpstreamError(
            f"Upstream {self.name!r} failed with HTTP {status}: {message}", failure="http_error", upstream_status=status
        )

    def _unreachable(self, why: str) -> UpstreamError:
        return UpstreamError(f"Upstream {self.name!r} could not be reached ({why}).", failure="unreachable")

    def close(self) -> None:
        pass  # the HTTP client is shared and closed by the app


def _litellm() -> Any:
    """litellm, imported on first use (it takes seconds to import), told not to download a model cost map."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


class LiteLLM:
    """Providers that do not speak OpenAI's dialect (Anthropic, Bedrock, Vertex, ...), via litellm."""

    def __init__(self, config: UpstreamSettings) -> None:
        self.name = config.name
        self.model = config.model
        self.logprobs = config.logprobs
        self.provider = config.model.split("/", 1)[0] if "/" in config.model else "openai"  # litellm's prefix
        self.streams = True
        self._config = config

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        litellm = _litellm()
        with self._failures():
            response = await litellm.acompletion(**self._arguments(body))
        return _checked(response.model_dump(), self.name)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The answer as litellm reads the provider's stream, chunk by chunk in Chat Completions' shape."""
        litellm = _litellm()
        with self._failures():
            chunks = await litellm.acompletion(
                **self._arguments(body), stream=True, stream_options={"include_usage": True}
            )
            async for chunk in chunks:
                yield chunk.model_dump()

    def _arguments(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = {k: v for k, v in body.items() if k not in (*_GATEWAY_ONLY, "model")}
        key = self._config.api_key.get_secret_value() if self._config.api_key else None
        return {"model": self.model, "api_base": self._config.api_base, "api_key": key,
                "timeout": self._config.timeout, "drop_params": True, **payload}  # fmt: skip

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """litellm's errors as the gateway's."""
        import openai
        from litellm import exceptions

        try:
            yield
        except exceptions.Timeout:
            raise UpstreamTimeout(
                f"Upstream {self.name!r} did not answer within {self._config.timeout:g} s.", failure="timeout"
            ) from None
        except (exceptions.BadRequestError, exceptions.NotFoundError, exceptions.UnprocessableEntityError) as exc:
            raise InvalidRequest(
                f"Upstream {self.name!r} rejected the request: {exc.message}",
                failure="rejected",
                upstream_status=exc.status_code,
            ) from None
        except exceptions.RateLimitError as exc:
            raise RateLimited(
                f"Upstream {self.name!r} is rate limiting: {exc.message}", failure="rate_limited", upstream_status=429
            ) from None
        except openai.APIError as exc:  # every other litellm exception derives from openai's
            status = getattr(exc, "status_code", None)
            raise UpstreamError(
                f"Upstream {self.name!r} failed: {exc.message}", failure="http_error", upstream_status=status
            ) from None

    def close(self) -> None:
        pass  # litellm keeps no per-adapter state


class LocalLlama:
    """The bundled SmolLM2-135M-Instruct model, run by llama-cpp-python in a process of its own (`bundled.py`,
    `gateway/workers.py`), started on the first request and kept with the model loaded; requests take turns."""

    def __init__(self, config: LocalModelSettings) -> None:
        self.name = config.name
        self.model = "SmolLM2-135M-Instruct.Q4_1"
        self.logprobs = True
        self.provider = "llama.cpp"
        self.streams = False
        self._worker = WorkerProcess(bundled.start, (config.model_dump(mode="json"),))

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("n", 1) != 1:
            raise InvalidRequest("The bundled model returns one choice per request: use n=1.", param="n")
        future = self._worker.schedule(bundled.answer, body)
        from pebble import ProcessExpired

        try:
            # Shielded: a client that leaves must not stop the model process (it would load the model again).
            done, found = await asyncio.shield(asyncio.wrap_future(future))
        except ProcessExpired as exc:
            raise UpstreamError(f"The bundled model's process ended ({exc}).", failure="unreachable") from None
        if not done:
            raise InvalidRequest(str(found))
        return _checked(found, self.name)

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError("asked whole: the bundled model answers in one piece")

    def close(self) -> None:
        self._worker.close()


class Upstreams:
    """The models the gateway offers, by the name clients use."""

    def __init__(
        self, upstreams: list[Upstream], aliases: dict[str, str] | None = None, default: str | None = None
    ) -> None:
        self._by_name = {upstream.name: upstream for upstream in upstreams}
        self._aliases = aliases or {}  # alias -> upstream name
        self._default = self._by_name.get(default) if default else None

    def get(self, name: str) -> Upstream:
        """The upstream serving model `name`: by its name, an alias, or the default upstream."""
        found = self._by_name.get(self._aliases.get(name, name)) or self._default
        if found is None:
            raise ModelNotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model")
        return found

    def names(self) -> list[str]:
        """Every model name declared: upstream names, then aliases."""
        return [*self._by_name, *self._aliases]

    def close(self) -> None:
        """Free what adapters hold beyond the shared HTTP client (the bundled model's memory)."""
        for upstream in self._by_name.values():
            upstream.close()


def build(settings: Settings, client: httpx.AsyncClient) -> Upstreams:
    upstreams: list[Upstream] = []
    for config in settings.upstreams:
        if config.provider == "openai":
            upstreams.append(OpenAICompatible(config, client))
        elif config.provider == "litellm":
            upstreams.append(LiteLLM(config))
        else:
            upstreams.append(LocalLlama(settings.local_model.model_copy(update={"name": config.name})))
    if not upstreams and settings.local_model.enabled and local_model_available():
        upstreams.append(LocalLlama(settings.local_model))
    aliases = {alias: config.name for config in settings.upstreams for alias in config.aliases}
    return Upstreams(upstreams, aliases, settings.default_upstream)
