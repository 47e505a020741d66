"""Console sessions: a signed cookie carrying a session token the review desk keeps server-side, so logging out
ends it at once (a login lasts `HITL_SESSION_MAX_AGE` however active). Passwords and the login throttle are
the review desk's too."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.deps import DeskDep, RuntimeDep
from gateway.errors import Forbidden
from gateway.models import Agent, Role
from gateway.review.desk import ReviewDesk


class LoginRequired(Exception):
    """Raised by `current_agent` when there is no valid session; the console redirects to the login."""


async def start_session(request: Request, desk: ReviewDesk, agent: Agent) -> None:
    request.session.clear()
    request.session["token"] = await desk.start_session(agent)


async def end_session(request: Request, desk: ReviewDesk) -> None:
    token = request.session.get("token")
    if isinstance(token, str):
        await desk.end_session(token)
    request.session.clear()


async def current_agent(request: Request, runtime: RuntimeDep, desk: DeskDep) -> Agent:
    token = request.session.get("token")
    if not isinstance(token, str):
        request.session.clear()
        raise LoginRequired
    # The cookie is re-signed on every response, so its own expiry slides; the session's start does not.
    agent = await desk.session_agent(token, runtime.settings.session_max_age)
    if agent is None:
        request.session.clear()
        raise LoginRequired
    return agent


CurrentAgent = Annotated[Agent, Depends(current_agent)]


def admin_only(agent: Agent, what: str) -> Agent:
    """The agent, when an admin; else a 403 saying `what` only admins do."""
    if agent.role != Role.ADMIN:
        raise Forbidden(f"Only admins {what}.")
    return agent
