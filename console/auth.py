"""Console logins: argon2 password hashes (pwdlib) and a signed session cookie holding the agent's id."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.agents import hasher
from gateway.deps import RuntimeDep
from gateway.models import Agent

# Verified against when the username is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hasher.hash("not a password anyone has")


class LoginRequired(Exception):
    """Raised by `current_agent` when there is no valid session; the console redirects to the login."""


async def verify(session: AsyncSession, username: str, password: str) -> Agent | None:
    agent = (await session.exec(select(Agent).where(Agent.username == username))).first()
    if agent is None or not agent.active:
        hasher.verify(password, _DUMMY_HASH)
        return None
    valid, new_hash = hasher.verify_and_update(password, agent.password_hash)
    if not valid:
        return None
    if new_hash:
        agent.password_hash = new_hash
        session.add(agent)
        await session.commit()
    return agent


async def current_agent(request: Request, runtime: RuntimeDep) -> Agent:
    agent_id = request.session.get("agent_id")
    if agent_id is None:
        raise LoginRequired
    async with runtime.sessions() as session:
        agent = await session.get(Agent, agent_id)
    if agent is None or not agent.active:
        request.session.clear()
        raise LoginRequired
    return agent


CurrentAgent = Annotated[Agent, Depends(current_agent)]
