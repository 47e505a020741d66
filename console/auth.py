"""Console logins: argon2 password hashes (pwdlib), a signed session cookie holding the agent's id and
when they logged in (a login lasts `HITL_SESSION_MAX_AGE` however active), and throttling of failed
logins per username and per address, counted in the database so every replica sees them."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.deps import RuntimeDep
from gateway.models import Agent, LoginFailure, utcnow
from gateway.review.agents import hasher
from gateway.settings import Settings

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


class TooManyFailures(Exception):
    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after


async def check_throttle(session: AsyncSession, settings: Settings, username: str, address: str) -> None:
    """Refuse a login attempt while a username or an address has too many recent failures."""
    since = utcnow() - timedelta(seconds=settings.login_window)
    recent = select(func.count()).select_from(LoginFailure).where(col(LoginFailure.at) >= since)
    by_name = (await session.exec(recent.where(col(LoginFailure.username) == username))).one()
    by_address = (await session.exec(recent.where(col(LoginFailure.address) == address))).one()
    if by_name >= settings.login_max_failures or by_address >= 4 * settings.login_max_failures:
        raise TooManyFailures(int(settings.login_window))


async def record_failure(session: AsyncSession, username: str, address: str) -> None:
    session.add(LoginFailure(username=username[:200], address=address[:64]))
    await session.commit()


async def clear_failures(session: AsyncSession, username: str) -> None:
    await session.exec(delete(LoginFailure).where(col(LoginFailure.username) == username))
    await session.commit()


def start_session(request: Request, agent: Agent) -> None:
    request.session.clear()
    request.session["agent_id"] = agent.id
    request.session["since"] = int(time.time())


async def current_agent(request: Request, runtime: RuntimeDep) -> Agent:
    agent_id = request.session.get("agent_id")
    if agent_id is None:
        raise LoginRequired
    # The cookie is re-signed on every response, so its own expiry slides; the login time does not.
    if time.time() - request.session.get("since", 0) > runtime.settings.session_max_age:
        request.session.clear()
        raise LoginRequired
    async with runtime.sessions() as session:
        agent = await session.get(Agent, agent_id)
    if agent is None or not agent.active:
        request.session.clear()
        raise LoginRequired
    return agent


CurrentAgent = Annotated[Agent, Depends(current_agent)]
