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

from gateway.scoring.confidence import score_choices  # noqa: E402
from gateway.settings import UpstreamSettings  # noqa: E402
from gateway.upstream import LiteLLM, OpenAICompatible  # noqa: E402

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
    signals_ms = []
    for _ in range(calls * 10):
        started = time.process_time()
        score_choices(choices)
        signals_ms.append((time.process_time() - started) * 1000)

    lean_median, heavy_median = statistics.median(httpx_ms), statistics.median(litellm_ms)
    print(f"answer: 200 tokens, top-5 logprobs; {calls} calls per adapter (median CPU ms per call)")
    print(f"  httpx path (OpenAICompatible): {lean_median:8.2f} ms")
    print(f"  litellm path (LiteLLM):        {heavy_median:8.2f} ms")
    print(f"  ratio litellm / httpx:         {heavy_median / lean_median:8.1f}x")
    print(f"  logprob signals + confidence:  {statistics.median(signals_ms):8.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    asyncio.run(main(parser.parse_args().calls))
