"""A fake OpenAI-compatible upstream for benchmarks: a realistic answer body (200 tokens, each with its top-5
logprobs, about 85 KB of JSON), served from memory after an optional latency.

An answer is sure (every token near certain: the gateway releases it) unless the last message contains
`[hold]`, which makes it unsure (the gateway holds it for an agent). Run it as its own process, so its CPU is
not the gateway's:

    .venv/bin/python benchmarks/fake_upstream.py --port 9100 [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time

HOLD_MARK = "[hold]"


def completion_body(tokens: int = 200, top: int = 5, *, sure: bool = True, seed: int = 7) -> dict:
    """A chat.completion whose every token carries `top` alternatives; `sure` makes the chosen token near certain
    (released by the bundled policy), otherwise around 30% likely (held)."""
    rng = random.Random(seed)
    content = []
    for i in range(tokens):
        if sure:
            best = math.log(0.9995)
            rest = sorted((math.log(rng.uniform(1e-6, 1e-4)) for _ in range(top - 1)), reverse=True)
        else:
            best = math.log(rng.uniform(0.2, 0.4))
            rest = sorted((math.log(rng.uniform(0.05, 0.15)) for _ in range(top - 1)), reverse=True)
        word = f" w{i}"
        alternatives = [(word, best)] + [(f" a{j}", lp) for j, lp in enumerate(rest)]
        content.append(
            {
                "token": word,
                "logprob": best,
                "bytes": list(word.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternatives],
            }
        )
    text = "".join(token["token"] for token in content)
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": {"content": content, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": 20 + tokens},
        "system_fingerprint": "fp_bench",
    }


def make_app(latency: float, sent_log: str | None = None) -> object:
    """A bare ASGI app: no framework, so the fake upstream costs as little CPU as it can. With `sent_log`, each
    answer's last message and the wall-clock time its body was handed to the socket are appended to that file
    (tab-separated), for a benchmark that times what happens after the upstream has answered."""
    log = open(sent_log, "a", buffering=1) if sent_log else None  # noqa: SIM115 (open for the process's life)
    bodies = {sure: json.dumps(completion_body(sure=sure)).encode() for sure in (True, False)}
    headers = [(b"content-type", b"application/json")]

    async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = b""
        while True:
            message = await receive()
            request += message.get("body", b"")
            if not message.get("more_body"):
                break
        asked = scope["method"] == "POST"  # anything else is a readiness check: answered at once
        if latency and asked:
            await asyncio.sleep(latency)
        body = bodies[HOLD_MARK.encode() not in request]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if log is not None and asked:
            sent = time.time()
            asked = json.loads(request)["messages"][-1]["content"]
            log.write(f"{asked}\t{sent}\n")

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--sent-log", help="append each answer's last message and the time it was sent")
    args = parser.parse_args()
    uvicorn.run(make_app(args.latency_ms / 1000, args.sent_log), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
