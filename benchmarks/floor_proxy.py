"""The floor for the speed benchmark: the least a Python proxy can do for a chat completion. FastAPI takes the
request, httpx forwards it, the standard library's json parses the answer and writes it again (a streamed one is
relayed chunk by chunk as it comes). No scoring, no storage, no policy: what any gateway would pay at least.

    .venv/bin/python benchmarks/floor_proxy.py --port 9101 --upstream http://127.0.0.1:9100/v1
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse


def make_app(upstream: str) -> FastAPI:
    clients: list[httpx.AsyncClient] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Idle connections let go after 4 s, before the upstream's own 5 s (as the gateway's client does).
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=4.0)
        async with httpx.AsyncClient(limits=limits) as c:
            clients.append(c)
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Response:
        body = json.loads(await request.body())
        if body.get("stream"):  # relayed chunk by chunk, as they come
            sent = clients[0].build_request("POST", f"{upstream}/chat/completions", json=body, timeout=60)
            streamed = await clients[0].send(sent, stream=True)

            async def relayed() -> AsyncIterator[bytes]:
                try:
                    async for chunk in streamed.aiter_raw():
                        yield chunk
                finally:
                    await streamed.aclose()

            return StreamingResponse(relayed(), media_type="text/event-stream")
        answer = await clients[0].post(f"{upstream}/chat/completions", json=body, timeout=60)
        parsed = json.loads(answer.content)
        return Response(json.dumps(parsed), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(args.upstream), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
