"""CPU cost of one upstream round trip, per adapter, for a 200-token answer with top-5 logprobs.

Both adapters call the same respx-mocked server, so the difference is the adapter's own work:
the lean httpx path (`OpenAICompatible`) against litellm (`LiteLLM`). Also times the logprob signals
for the same answer. Prints medians of CPU time (time.process_time) and the ratio.

    .venv/bin/python benchmarks/upstream_cpu.py [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import respx

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from gateway.conversation.upstream import LiteLLM, OpenAICompatible  # noqa: E402
from gateway.scoring.confidence import score_choices  # noqa: E402
from gateway.scoring.logprobs import LOGPROB_FLOOR, top_k_entropy  # noqa: E402
from gateway.settings import UpstreamSettings  # noqa: E402

BASE = "http://bench.upstream/v1"


def answer(tokens: int = 200, top: int = 5, seed: int = 7) -> dict:
    rng = random.Random(seed)
    content = []
    for i in range(tokens):
        logprobs = sorted((math.log(rng.uniform(0.01, 0.9)) for _ in range(top)), reverse=True)
        word = f" w{i}"
        content.append(
            {
                "token": word,
                "logprob": logprobs[0],
                "bytes": list(word.encode()),
                "top_logprobs": [
                    {"token": f" a{j}", "logprob": lp, "bytes": list(f" a{j}".encode())}
                    for j, lp in enumerate(logprobs)
                ],
            }
        )
    text = "".join(t["token"] for t in content)
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": {"content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": tokens + 20},
    }


async def cpu_per_call(call: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    await call()  # warm up (imports, connection pools)
    samples = []
    for _ in range(calls):
        started = time.process_time()
        await call()
        samples.append((time.process_time() - started) * 1000)
    return samples


def cpu_ms(work: Callable[[], object], repeat: int) -> list[float]:
    found = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        found.append((time.process_time() - started) * 1000)
    return found


def per_token_signals(content: list[dict]) -> tuple[float, float, float]:
    logprobs = [max(LOGPROB_FLOOR, float(token["logprob"])) for token in content]
    entropies = [e for token in content if (e := top_k_entropy(token.get("top_logprobs") or ())) is not None]
    return sum(logprobs) / len(logprobs), math.exp(min(logprobs)), sum(entropies) / len(entropies)


async def main(calls: int) -> None:
    import litellm

    litellm.disable_aiohttp_transport = True
    body = answer()
    request = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 5}
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=body))
        async with httpx.AsyncClient() as client:
            lean = OpenAICompatible(UpstreamSettings(name="bench", api_base=BASE, model="bench"), client)
            heavy = LiteLLM(
                UpstreamSettings(name="bench", provider="litellm", api_base=BASE, model="openai/bench", api_key="sk")
            )
            httpx_ms = await cpu_per_call(lambda: lean.complete(request), calls)
            litellm_ms = await cpu_per_call(lambda: heavy.complete(request), calls)
    choices = body["choices"]
    signals_ms = cpu_ms(lambda: score_choices(choices), calls * 10)
    # Baseline: the same signals token by token in plain Python (the gateway's first implementation).
    content = choices[0]["logprobs"]["content"]
    per_token_ms = cpu_ms(lambda: per_token_signals(content), calls * 10)

    lean_median, heavy_median = statistics.median(httpx_ms), statistics.median(litellm_ms)
    print(f"answer: 200 tokens, top-5 logprobs; {calls} calls per adapter (median CPU ms per call)")
    print(f"  httpx path (OpenAICompatible): {lean_median:8.2f} ms")
    print(f"  litellm path (LiteLLM):        {heavy_median:8.2f} ms")
    print(f"  ratio litellm / httpx:         {heavy_median / lean_median:8.1f}x")
    vectorized, per_token = statistics.median(signals_ms), statistics.median(per_token_ms)
    print(f"  logprob signals + confidence:  {vectorized:8.3f} ms (target < 1 ms)")
    print(f"  signals token by token (base): {per_token:8.3f} ms ({per_token / vectorized:.1f}x the numpy path)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    asyncio.run(main(parser.parse_args().calls))
