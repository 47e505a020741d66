"""Every route the API serves, in one table: the app includes exactly these, a request to any other path under /v1
gets a 404 in its dialect's shape that names them, and a test walks them all to prove none answers unscored."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from gateway.api import chat, datasets, insights, messages, responses

ROUTERS: tuple[APIRouter, ...] = (chat.router, responses.router, messages.router, datasets.router, insights.router)


def routes() -> list[APIRoute]:
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]


def listing() -> str:
    """What is served, for a person: `POST /v1/chat/completions, POST /v1/responses, ...`."""
    return ", ".join(f"{'/'.join(sorted(route.methods or ()))} {route.path}" for route in routes())
