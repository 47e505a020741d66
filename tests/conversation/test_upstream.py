"""Upstream adapters: the lean httpx path and litellm, both against a respx-mocked provider."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from gateway.conversation import bundled
from gateway.conversation.bundled import BundledModel, local_model_available
from gateway.conversation.upstream import LiteLLM, LocalLlama, OpenAICompatible, build
from gateway.errors import InvalidRequest, RateLimited, UpstreamError
from gateway.settings import LocalModelSettings, Settings, UpstreamSettings
from tests import factories
from tests.factories import UPSTREAM

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else litellm fetches a cost map at import


@pytest.fixture
def litellm_upstream() -> LiteLLM:
    import litellm

    litellm.disable_aiohttp_transport = True  # else respx never sees litellm's calls
    return LiteLLM(
        UpstreamSettings(
            name="via-litellm", provider="litellm", model="openai/gpt-4o-mini", api_base=UPSTREAM, api_key="sk-l"
        )
    )


async def test_litellm_returns_an_openai_completion_with_logprobs(
    litellm_upstream: LiteLLM, upstream: factories.UpstreamMock
) -> None:
    route = upstream.answer(factories.completion_body())
    result = await litellm_upstream.complete(
        {
            "model": "via-litellm",
            "messages": [{"role": "user", "content": "hi"}],
            "logprobs": True,
            "top_logprobs": 5,
            "hitl": {"wait": 1},
        }
    )
    sent = json.loads(route.calls.last.request.content)
    assert sent["model"] == "gpt-4o-mini" and sent["logprobs"] is True and "hitl" not in sent
    assert result["choices"][0]["message"]["content"] == "Paris is the capital of France."
    assert result["choices"][0]["logprobs"]["content"][0]["logprob"] == pytest.approx(-0.01)


@pytest.mark.parametrize(("status", "error"), [(400, InvalidRequest), (429, RateLimited), (500, UpstreamError)])
async def test_litellm_errors_map_to_gateway_errors(
    litellm_upstream: LiteLLM, upstream: factories.UpstreamMock, status: int, error: type[Exception]
) -> None:
    upstream.answer({"error": {"message": "nope"}}, status=status)
    with pytest.raises(error):
        await litellm_upstream.complete({"messages": [{"role": "user", "content": "hi"}], "num_retries": 0})


async def test_openai_compatible_without_key_sends_no_authorization(upstream: factories.UpstreamMock) -> None:
    route = upstream.answer(factories.completion_body())
    async with httpx.AsyncClient() as client:
        adapter = OpenAICompatible(UpstreamSettings(name="vllm", api_base=UPSTREAM + "/"), client)
        await adapter.complete(
            {"model": "vllm", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
        )
    request = route.calls.last.request
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {"model": "vllm", "messages": []}


def test_build_picks_an_adapter_per_provider() -> None:
    settings = Settings(
        upstreams=[
            UpstreamSettings(name="a", api_base=UPSTREAM),
            UpstreamSettings(name="b", provider="litellm", model="anthropic/claude-sonnet-4-5"),
            UpstreamSettings(name="c", provider="local"),
        ],
        local_model=LocalModelSettings(enabled=False),
    )
    upstreams = build(settings, httpx.AsyncClient())
    assert [type(upstreams.get(name)) for name in ("a", "b", "c")] == [OpenAICompatible, LiteLLM, LocalLlama]
    assert upstreams.get("c").name == "c"


@pytest.mark.parametrize(("cores", "threads"), [({0}, 1), ({0, 1}, 1), (set(range(8)), 7)])
def test_the_bundled_model_leaves_a_core_to_the_web_server(
    monkeypatch: pytest.MonkeyPatch, cores: set[int], threads: int
) -> None:
    """Generating on every core left console pages waiting 13-20 s on 2 cores: the model gets all but one."""
    made: dict[str, object] = {}

    class Llama:
        def __init__(self, **kwargs: object) -> None:
            made.update(kwargs)

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cores)
    monkeypatch.setattr("llama_cpp.Llama", Llama)
    monkeypatch.setattr("gateway.conversation.bundled.bundled_model_path", lambda: Path("model.gguf"))
    BundledModel(LocalModelSettings()).load()
    assert (made["n_threads"], made["n_threads_batch"]) == (threads, threads)
    made.clear()
    BundledModel(LocalModelSettings(threads=2)).load()  # as configured
    assert (made["n_threads"], made["n_threads_batch"]) == (2, 2)


@pytest.mark.slow
async def test_the_bundled_model_answers_from_its_own_process() -> None:
    """Generating in a thread of the web server's process held its GIL: console pages took 13-20 s."""
    if not local_model_available():
        pytest.skip("the bundled model is not installed")
    model = LocalLlama(LocalModelSettings(max_tokens=8))
    try:
        body = {"messages": [{"role": "user", "content": "Say hi."}], "logprobs": True, "top_logprobs": 2}
        answer = await model.complete(body)
        assert answer["choices"][0]["logprobs"]["content"]
        assert bundled._MODEL is None  # this process never made the model: its own process did
        with pytest.raises(InvalidRequest, match="rejected the request"):
            await model.complete({"messages": [{"role": "user", "content": "word " * 5000}]})  # past n_ctx
        again = await model.complete(body)  # the same process, the model still loaded
        assert again["choices"][0]["message"]["role"] == "assistant"
    finally:
        model.close()
