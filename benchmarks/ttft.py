"""Time to first token of a streamed answer, side by side in one run: a 200-token answer (sentences of 20 tokens,
each token near certain) generated at 20 ms per token by the fake upstream, asked R times (C at a time) of

- the upstream itself,
- a streaming pass-through (`floor_proxy.py`: FastAPI + httpx relaying the chunks as they come),
- the gateway, buffered (the bundled policy: the whole answer scored before its first chunk),
- the gateway, progressive (`stream: progressive`, sentence chunks),

each measured as the time from sending the request to the first chunk with text, and to the end of the stream.
Then the CPU time per streamed request against per non-streamed one (the same answers), of the progressive
gateway and, for scale, of the pass-through and of a bare reader (this process, an aiohttp client on uvloop that
only receives the upstream's answer and does nothing with it): what receiving 200 chunks one by one costs at all.

Targets: progressive TTFT p50 within the pass-through's plus one chunk's generation time (20 tokens x 20 ms);
progressive total p50 within 1.05x the pass-through's; CPU per streamed request at most 1.5x per non-streamed.

    .venv/bin/python benchmarks/ttft.py [--requests 20] [--concurrency 5] [--token-ms 20] [--json FILE]

Exit status 1 when a target is missed (`--no-check` only reports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from harness import HITL, KEY, MODEL, ROOT, Processes, cpu_seconds, finish, free_port, seeded, summary
from harness import gateway_env as base_env

CHUNK_TOKENS = 20  # the fake upstream's sentence
PROGRESSIVE = """\
version: bench-progressive
tiers: [agent, senior]
stream: progressive
bands:
  - {min: 0.92, route: release}
  - {min: 0.0, route: hold, tier: agent}
unscored: {route: hold, tier: agent}
"""


def ask(stream: bool = True) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}], "stream": stream}


def _has_text(line: str) -> bool:
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[6:]).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def timed(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """Seconds to the first chunk with text, and to the end of the stream."""
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=ask()) as response:
        assert response.status_code == 200, (await response.aread())[:300]
        async for line in response.aiter_lines():
            if first is None and _has_text(line):
                first = time.perf_counter() - started
    assert first is not None, "no text arrived"
    return first, time.perf_counter() - started


async def measure(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency + 5)
    headers = {"Authorization": f"Bearer {KEY}"}
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as client:

        async def one() -> tuple[float, float]:
            async with gate:
                return await timed(client, url)

        found = await asyncio.gather(*(one() for _ in range(requests)))
    return {"ttft_s": summary([f for f, _ in found]), "total_s": summary([t for _, t in found])}


async def cpu_per_request(url: str, pid: int, requests: int, concurrency: int, stream: bool) -> float:
    """The gateway's CPU seconds per request over `requests` streamed or unstreamed ones."""
    headers = {"Authorization": f"Bearer {KEY}"}
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120, headers=headers) as client:

        async def one() -> None:
            async with gate:
                async with client.stream("POST", url, json=ask(stream)) as response:
                    assert response.status_code == 200
                    await response.aread()

        await one()  # warm: the first request loads what the rest reuse
        before = cpu_seconds(pid)
        await asyncio.gather(*(one() for _ in range(requests)))
        return (cpu_seconds(pid) - before) / requests


async def reading_cpu(url: str, requests: int, concurrency: int, stream: bool) -> float:
    """This process's CPU seconds per answer for only receiving it from `url` (streamed: chunk by chunk as they
    come; else in one body), measured while it does nothing else."""
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one() -> None:
            async with gate, session.post(url, json=ask(stream)) as response:
                assert response.status == 200
                async for _ in response.content.iter_any():
                    pass

        await one()
        before = cpu_seconds(os.getpid())
        await asyncio.gather(*(one() for _ in range(requests)))
        return (cpu_seconds(os.getpid()) - before) / requests


def start_gateway(processes: Processes, name: str, workdir: Path, upstream: str, policy: str | None) -> tuple[str, int]:
    url = seeded(f"sqlite:///{workdir / name}.db")
    extra = {"HITL_POLICY_PATH": policy} if policy else {}
    env = base_env(url, upstream, HITL_SELFCHECK__MODE="never", HITL_AUDIT__RATE="0", **extra)
    port = free_port()
    process = processes.start(name, [HITL, "serve", "--port", str(port)], env, f"http://127.0.0.1:{port}/")
    return f"http://127.0.0.1:{port}", process.pid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--token-ms", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "ttft.json")
    parser.add_argument("--no-check", action="store_true", help="report only; never exit 1 for a missed target")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hitl-ttft-"))
    policy = workdir / "progressive.yaml"
    policy.write_text(PROGRESSIVE)
    results: dict[str, Any] = {"requests": args.requests, "concurrency": args.concurrency, "token_ms": args.token_ms}
    with Processes(workdir / "logs") as processes:
        upstream = processes.fake_upstream(token_ms=args.token_ms)
        port = free_port()
        command = [sys.executable, str(ROOT / "benchmarks" / "floor_proxy.py"), "--port", str(port)]
        passing = processes.start(
            "pass-through", [*command, "--upstream", upstream], dict(os.environ), f"http://127.0.0.1:{port}/"
        )
        buffered, _ = start_gateway(processes, "buffered", workdir, upstream, None)
        progressive, pid = start_gateway(processes, "progressive", workdir, upstream, str(policy))
        targets = {
            "upstream": f"{upstream}/chat/completions",
            "pass-through": f"http://127.0.0.1:{port}/v1/chat/completions",
            "gateway buffered": f"{buffered}/v1/chat/completions",
            "gateway progressive": f"{progressive}/v1/chat/completions",
        }
        for name, url in targets.items():
            results[name] = asyncio.run(measure(url, args.requests, args.concurrency))
            print(f"{name:>20}: TTFT p50 {results[name]['ttft_s']['median'] * 1000:7.0f} ms, "
                  f"total p50 {results[name]['total_s']['median'] * 1000:7.0f} ms")  # fmt: skip
        for name, measured in (("gateway progressive", pid), ("pass-through", passing.pid)):
            url = targets[name]
            streamed = asyncio.run(cpu_per_request(url, measured, args.requests, args.concurrency, stream=True))
            whole = asyncio.run(cpu_per_request(url, measured, args.requests, args.concurrency, stream=False))
            cpu = {"streamed": streamed * 1000, "not streamed": whole * 1000, "ratio": streamed / whole}
            results[name]["cpu_ms"] = cpu
            print(f"{name:>20}: CPU per request streamed {cpu['streamed']:.1f} ms, not streamed "
                  f"{cpu['not streamed']:.1f} ms ({cpu['ratio']:.2f}x)")  # fmt: skip

        url = targets["upstream"]  # read on uvloop, the event loop `hitl serve` runs on
        streamed = uvloop.run(reading_cpu(url, args.requests, args.concurrency, stream=True))
        whole = uvloop.run(reading_cpu(url, args.requests, args.concurrency, stream=False))
        reading = {"streamed": streamed * 1000, "not streamed": whole * 1000}
        results["bare reader"] = {"cpu_ms": reading}
        print(f"{'bare reader':>20}: CPU per answer received streamed {reading['streamed']:.1f} ms, in one body "
              f"{reading['not streamed']:.1f} ms")  # fmt: skip
        gateway = results["gateway progressive"]["cpu_ms"]
        alone = reading["streamed"] - reading["not streamed"]
        more = gateway["streamed"] - gateway["not streamed"]
        print(f"{'':>20}  receiving the chunks alone: {alone:.1f} ms of the gateway's {more:.1f} ms more per stream")

    floor, fast = results["pass-through"], results["gateway progressive"]
    chunk_s = CHUNK_TOKENS * args.token_ms / 1000
    missed = []
    if fast["ttft_s"]["median"] > floor["ttft_s"]["median"] + chunk_s:
        missed.append(f"progressive TTFT p50 beyond the pass-through's + one chunk ({chunk_s:g} s)")
    if fast["total_s"]["median"] > 1.05 * floor["total_s"]["median"]:
        missed.append("progressive total p50 beyond 1.05x the pass-through's")
    if fast["cpu_ms"]["ratio"] > 1.5:
        missed.append("CPU per streamed request beyond 1.5x per non-streamed")
    return finish(results, args.json, missed, args.no_check)


if __name__ == "__main__":
    sys.exit(main())
