"""The reference for the speed benchmark: the same minimal proxy as `floor_proxy.py`, with litellm's
`acompletion` on the hot path (as LiteLLM-based gateways have it) instead of httpx and json.

    .venv/bin/python benchmarks/litellm_proxy.py --port 9102 --upstream http://127.0.0.1:9100/v1
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost map download at import

import litellm  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request, Response  # noqa: E402


def make_app(upstream: str) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Response:
        body = json.loads(await request.body())
        model = body.pop("model")
        answer = await litellm.acompletion(model=f"openai/{model}", api_base=upstream, api_key="unused", **body)
        return Response(answer.model_dump_json(), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(args.upstream), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
