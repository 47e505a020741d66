"""Streamed answers, measured on SQLite and on PostgreSQL, each gateway in its own process beside fake upstreams.

1. First byte after the upstream: streamed requests released one at a time (fake upstream: 20 ms, 200 tokens
   with top-5 logprobs). For each, the time from the fake upstream handing its answer to the socket to the
   client receiving the first `data:` event: the gateway reads and scores the answer, commits the exchange
   and writes the first chunk in between. Both ends read the same wall clock (one machine). The floor (a bare
   pass-through) is timed the same way, and the three servers take turns over 5 rounds. Target: the median
   within 5 ms of the floor's.
2. Keep-alive while the upstream generates: a streamed request whose upstream takes 4 s, the gateway's
   keep-alive at 1 s. When the client got its first byte, and the longest silence before the answer.
   Targets: the first byte before the upstream answers; no silence longer than twice the keep-alive.
3. Memory per open held stream: S streamed requests held for an agent (the fake upstream unsure), each with
   its 200 and headers received and its connection open; the gateway's resident memory growth over S.

    .venv/bin/python benchmarks/streaming.py [--requests 100] [--rounds 5] [--held 200] [--json ...]

Exit status 1 when a target is missed (`--no-check` only reports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from harness import HITL, KEY, MODEL, ROOT, Processes, finish, free_port, fresh_postgres, rss_mb, seeded, summary
from harness import gateway_env as base_env

SLOW = "bench-slow"
KEEPALIVE = 1.0
SLOW_MS = 4000.0
HOLD_MARK = "[hold]"  # the fake upstream's mark for an unsure answer (see fake_upstream.py)


def ask(content: str, model: str = MODEL) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "logprobs": True,
        "top_logprobs": 5,
    }


async def first_data_at(client: httpx.AsyncClient, base: str, content: str, mark: bytes = b"data: ") -> float:
    """The wall-clock time the first `data:` event of a streamed answer (or the first byte holding `mark`)
    reached the client."""
    arrived = None
    async with client.stream("POST", f"{base}/v1/chat/completions", json=ask(content)) as response:
        seen = b""
        async for raw in response.aiter_raw():  # read to the end, so the connection is reused
            seen += raw
            if arrived is None and mark in seen:
                arrived = time.time()
    if arrived is None:
        raise RuntimeError(f"no data event: HTTP {response.status_code} {seen[:300]!r}")
    return arrived


def sent_times(log: Path) -> dict[str, float]:
    found = {}
    for line in log.read_text().splitlines():
        content, sent = line.rsplit("\t", 1)
        found[content] = float(sent)
    return found


async def first_bytes(
    servers: dict[str, tuple[str, bytes]], log: Path, requests: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """The first byte after the upstream's answer, for each server (its base URL, and the bytes that mark its
    answer), measured in turns: each round, every server takes its share of the requests, so a machine that
    drifts during the run weighs on all of them alike."""
    arrivals: dict[str, dict[str, float]] = {name: {} for name in servers}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        for name, (base, mark) in servers.items():
            for number in range(20):  # warm up
                await first_data_at(client, base, f"{name} warm {number}", mark)
        for turn in range(rounds):
            for name, (base, mark) in servers.items():
                for number in range(turn * requests // rounds, (turn + 1) * requests // rounds):
                    content = f"{name} stream {number}"
                    arrivals[name][content] = await first_data_at(client, base, content, mark)
    sent = sent_times(log)
    return {
        name: summary([(arrived - sent[content]) * 1000 for content, arrived in found.items()])
        for name, found in arrivals.items()
    }


async def keepalive(base: str) -> dict[str, Any]:
    """One streamed request on the slow upstream: when its bytes arrived, relative to the request."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        started = time.perf_counter()
        arrivals: list[tuple[float, bytes]] = []
        async with client.stream("POST", f"{base}/v1/chat/completions", json=ask("slow", SLOW)) as response:
            async for raw in response.aiter_raw():
                arrivals.append((time.perf_counter() - started, raw))
            status = response.headers.get("x-hitl-status")
    answer = next(at for at, raw in arrivals if b"data: " in raw)
    before = [0.0] + [at for at, _ in arrivals if at <= answer]
    return {
        "first_byte_s": arrivals[0][0],
        "answer_s": answer,
        "longest_silence_s": max(later - earlier for earlier, later in zip(before, before[1:], strict=False)),
        "comments_before_answer": sum(raw.count(b"\n:") + raw.startswith(b":") for at, raw in arrivals if at < answer),
        "headers_status": status,
    }


async def held_streams(base: str, pid: int, count: int) -> dict[str, Any]:
    """Open `count` held streams, wait for every 200, and measure the gateway's memory before and with them."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=120, limits=limits) as client:
        for number in range(5):  # warm up: a held stream each way, so what is measured is the streams alone
            warm = client.build_request("POST", f"{base}/v1/chat/completions", json=ask(f"{HOLD_MARK} warm {number}"))
            await (await client.send(warm, stream=True)).aclose()
        await asyncio.sleep(1)
        before = rss_mb(pid)
        requests = [
            client.build_request("POST", f"{base}/v1/chat/completions", json=ask(f"{HOLD_MARK} held {number}"))
            for number in range(count)
        ]
        # Opened ten at a time: the growth measured is what open streams keep, not the garbage of a burst.
        responses = []
        for start in range(0, count, 10):
            batch = requests[start : start + 10]
            responses += await asyncio.gather(*(client.send(request, stream=True) for request in batch))
        await asyncio.sleep(1)
        during = rss_mb(pid)
        statuses = {response.headers.get("x-hitl-status") for response in responses}
        for response in responses:
            await response.aclose()
    return {
        "streams": count,
        "rss_before_mb": before,
        "rss_with_streams_mb": during,
        "kb_per_stream": (during - before) * 1024 / count,
        "statuses": sorted(str(status) for status in statuses),
    }


def start_gateway(processes: Processes, name: str, url: str, fast: str, slow: str) -> tuple[str, int]:
    upstreams = [{"name": MODEL, "api_base": fast, "model": MODEL}, {"name": SLOW, "api_base": slow, "model": MODEL}]
    env = base_env(
        url,
        fast,
        HITL_UPSTREAMS=json.dumps(upstreams),
        HITL_HOLD__KEEPALIVE=str(KEEPALIVE),
        HITL_HOLD__DEFAULT_WAIT="120",
    )
    port = free_port()
    process = processes.start(name, [HITL, "serve", "--port", str(port)], env, f"http://127.0.0.1:{port}/")
    return f"http://127.0.0.1:{port}", process.pid


def report(results: dict[str, Any]) -> list[str]:
    missed = []
    floor = results["floor_first_byte_ms"]
    print(
        f"\nfloor: first byte after the upstream's answer: median {floor['median']:.2f} ms, p90 {floor['p90']:.2f} ms"
    )
    for name, found in results["gateways"].items():
        first, alive, held = found["first_byte_ms"], found["keepalive"], found["held_streams"]
        print(f"\n{name}")
        own = first["median"] - floor["median"]
        after = f"median {first['median']:.2f} ms, p90 {first['p90']:.2f} ms; {own:+.2f} ms over the floor's"
        print(f"  first data event after the upstream's answer: {after}")
        found["first_byte_over_floor_ms"] = own
        print(
            f"  upstream generating {SLOW_MS / 1000:.0f} s, keep-alive {KEEPALIVE:g} s: first byte at"
            f" {alive['first_byte_s']:.2f} s, answer at {alive['answer_s']:.2f} s, longest silence"
            f" {alive['longest_silence_s']:.2f} s, {alive['comments_before_answer']} comments before it"
        )
        print(
            f"  {held['streams']} open held streams: {held['kb_per_stream']:.0f} KB each"
            f" (RSS {held['rss_before_mb']:.0f} -> {held['rss_with_streams_mb']:.0f} MB)"
        )
        missed += [f"{name}: first data {own:.2f} ms over the floor's"] if own >= 5 else []
        if alive["first_byte_s"] >= SLOW_MS / 1000:
            missed.append(f"{name}: no byte before the upstream answered")
        if alive["longest_silence_s"] > 2 * KEEPALIVE:
            missed.append(f"{name}: {alive['longest_silence_s']:.2f} s of silence while generating")
        # Under a burst some streams outlast the keep-alive before the upstream answers: `generating` first.
        if not set(held["statuses"]) <= {"pending", "generating"}:
            missed.append(f"{name}: held streams answered {held['statuses']}")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="turns the first-byte requests are measured in")
    parser.add_argument("--held", type=int, default=200)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "streaming.json")
    parser.add_argument("--no-check", action="store_true", help="report only; never exit 1 for a missed target")
    args = parser.parse_args()

    workdir = ROOT / "artifacts" / "bench-streaming"
    workdir.mkdir(parents=True, exist_ok=True)
    for leftover in [*workdir.glob("streaming.db*"), workdir / "sent.log"]:
        leftover.unlink(missing_ok=True)
    urls = {
        "gateway-sqlite": seeded(f"sqlite:///{workdir / 'streaming.db'}"),
        "gateway-postgres": fresh_postgres(args.database_url, "hitl_streaming"),
    }
    results: dict[str, Any] = {"gateways": {}}
    with Processes(workdir) as processes:
        log = workdir / "sent.log"
        fast = processes.fake_upstream(20.0, "upstream-fast", sent_log=log)
        slow = processes.fake_upstream(SLOW_MS, "upstream-slow")
        # The floor (`floor_proxy.py`, a bare pass-through answering JSON) timed the same way: what loopback,
        # wake-ups and one parse and write of the body cost on this machine, whoever the proxy is.
        port = free_port()
        command = [sys.executable, str(ROOT / "benchmarks" / "floor_proxy.py"), "--port", str(port), "--upstream", fast]
        processes.start("floor", command, dict(os.environ), f"http://127.0.0.1:{port}/")
        gateways = {name: start_gateway(processes, name, url, fast, slow) for name, url in urls.items()}
        print(f"measuring the first byte, {args.rounds} rounds in turns ...", flush=True)
        servers = {"floor": (f"http://127.0.0.1:{port}", b"{")} | {
            name: (base, b"data: ") for name, (base, _) in gateways.items()
        }
        first = asyncio.run(first_bytes(servers, log, args.requests, args.rounds))
        results["floor_first_byte_ms"] = first["floor"]
        for name, (base, pid) in gateways.items():
            print(f"measuring {name}'s keep-alive and held streams ...", flush=True)
            results["gateways"][name] = {
                "first_byte_ms": first[name],
                "keepalive": asyncio.run(keepalive(base)),
                "held_streams": asyncio.run(held_streams(base, pid, args.held)),
            }
    return finish(results, args.json, report(results), args.no_check)


if __name__ == "__main__":
    sys.exit(main())
