"""Console sessions: a signed session cookie holding the agent's id and when they logged in (a login lasts
`HITL_SESSION_MAX_AGE` however active). Passwords and the login throttle are the review desk's."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.deps import DeskDep, RuntimeDep
from gateway.models import Agent


class LoginRequired(Exception):
    """Raised by `current_agent` when there is no valid session; the console redirects to the login."""


def start_session(request: Request, agent: Agent, now: float) -> None:
    request.session.clear()
    request.session["agent_id"] = agent.id
    request.session["since"] = int(now)


async def current_agent(request: Request, runtime: RuntimeDep, desk: DeskDep) -> Agent:
    agent_id = request.session.get("agent_id")
    if not isinstance(agent_id, int):
        raise LoginRequired
    # The cookie is re-signed on every response, so its own expiry slides; the login time does not.
    if runtime.clock.now().timestamp() - request.session.get("since", 0) > runtime.settings.session_max_age:
        request.session.clear()
        raise LoginRequired
    agent = await desk.agent(agent_id)
    if agent is None:
        request.session.clear()
        raise LoginRequired
    return agent


CurrentAgent = Annotated[Agent, Depends(current_agent)]
