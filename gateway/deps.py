"""Typed dependencies: routes read like sentences (`key: CurrentKey, relay: RelayDep`), each taking the service
it needs, never the whole runtime (the console's pages still read a few of its parts through `RuntimeDep`).

Each is `async def` though none awaits: FastAPI runs a plain `def` dependency in a worker thread, a thread hop
per dependency per request on the API's hot path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.models import ApiKey
from gateway.relay.apikeys import KeyCache
from gateway.relay.service import Relay
from gateway.review.desk import ReviewDesk
from gateway.runtime import Runtime
from gateway.webhooks.outbox import Outbox


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_relay(request: Request) -> Relay:
    relay: Relay = request.app.state.runtime.relay
    return relay


RelayDep = Annotated[Relay, Depends(get_relay)]


async def get_keys(request: Request) -> KeyCache:
    keys: KeyCache = request.app.state.runtime.keys
    return keys


KeysDep = Annotated[KeyCache, Depends(get_keys)]


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.runtime.engine
    return engine


EngineDep = Annotated[AsyncEngine, Depends(get_engine)]


async def get_desk(request: Request) -> ReviewDesk:
    desk: ReviewDesk = request.app.state.runtime.desk
    return desk


DeskDep = Annotated[ReviewDesk, Depends(get_desk)]


async def get_outbox(request: Request) -> Outbox:
    outbox: Outbox = request.app.state.runtime.outbox
    return outbox


OutboxDep = Annotated[Outbox, Depends(get_outbox)]


async def current_key(request: Request, keys: KeysDep) -> ApiKey:
    """The API key of `Authorization: Bearer ...`, or of `x-api-key` (how Anthropic's clients send theirs)."""
    authorization = request.headers.get("authorization")
    if authorization is None and (key := request.headers.get("x-api-key")) is not None:
        authorization = f"Bearer {key}"
    return await keys.authenticate(authorization)


CurrentKey = Annotated[ApiKey, Depends(current_key)]


async def request_id(request: Request) -> str:
    return str(request.scope["state"]["request_id"])


RequestId = Annotated[str, Depends(request_id)]
