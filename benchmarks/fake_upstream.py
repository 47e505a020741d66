"""A fake OpenAI-compatible upstream for benchmarks: a realistic answer body (200 tokens in sentences of 20, each
token with its top-5 logprobs, about 85 KB of JSON), served from memory after an optional latency; streamed as
`chat.completion.chunk`s (a token each, with its logprobs) when the request asks for a stream, paced at
`--token-ms` per token (a whole answer then takes as long to generate).

An answer is sure (every token near certain: the gateway releases it) unless the last message contains
`[hold]`, which makes it unsure (the gateway holds it for an agent). Run it as its own process, so its CPU is
not the gateway's:

    .venv/bin/python benchmarks/fake_upstream.py --port 9100 [--latency-ms 0] [--token-ms 0]
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
        word = f" w{i}." if i % 20 == 19 else f" w{i}"  # a sentence every 20 tokens
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


def stream_events(body: dict) -> list[bytes]:
    """The answer as an OpenAI-compatible server streams it: the role, a chunk per token with its logprobs, the
    finish reason, the usage, `[DONE]` (one SSE event each)."""
    head = {key: body[key] for key in ("id", "created", "model", "system_fingerprint")}

    def event(choices: list[dict], **extra: object) -> bytes:
        chunk = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def delta(content: dict, logprobs: object = None, finish: str | None = None) -> bytes:
        return event([{"index": 0, "delta": content, "logprobs": logprobs, "finish_reason": finish}])

    tokens = body["choices"][0]["logprobs"]["content"]
    return [
        delta({"role": "assistant", "content": ""}),
        *(delta({"content": token["token"]}, {"content": [token], "refusal": None}) for token in tokens),
        delta({}, finish="stop"),
        event([], usage=body["usage"]),
        b"data: [DONE]\n\n",
    ]


def make_app(latency: float, sent_log: str | None = None, token_ms: float = 0.0) -> object:
    """A bare ASGI app: no framework, so the fake upstream costs as little CPU as it can. With `sent_log`, each
    answer's last message and the wall-clock time its body was handed to the socket are appended to that file
    (tab-separated), for a benchmark that times what happens after the upstream has answered."""
    log = open(sent_log, "a", buffering=1) if sent_log else None  # noqa: SIM115 (open for the process's life)
    answers = {sure: completion_body(sure=sure) for sure in (True, False)}
    bodies = {sure: json.dumps(answer).encode() for sure, answer in answers.items()}
    streams = {sure: stream_events(answer) for sure, answer in answers.items()}
    headers = [(b"content-type", b"application/json")]
    sse = [(b"content-type", b"text/event-stream")]
    pace = token_ms / 1000

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
        sure = HOLD_MARK.encode() not in request
        if asked and json.loads(request).get("stream"):
            await send({"type": "http.response.start", "status": 200, "headers": sse})
            events = streams[sure]
            if pace:
                for event in events[:-3]:  # the role, then each token as it is generated
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                    await asyncio.sleep(pace)
                events = events[-3:]
            await send({"type": "http.response.body", "body": b"".join(events)})
        else:
            if pace and asked:
                await asyncio.sleep(pace * len(streams[sure]))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": bodies[sure]})
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
    parser.add_argument("--token-ms", type=float, default=0.0, help="milliseconds to generate each token")
    args = parser.parse_args()
    app = make_app(args.latency_ms / 1000, args.sent_log, args.token_ms)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
