"""Console sign-in: argon2 password checks (pwdlib) and throttling of failed logins per username and per
address, counted in the database so every replica sees them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Agent, LoginFailure
from gateway.review.agents import password_hasher


@cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so a wrong name costs as long as a wrong password.
    Made on first use: hashing takes a noticeable moment, and nothing is built at import time."""
    return password_hasher().hash("not a password anyone has")


@dataclass(frozen=True)
class LoginLimits:
    max_failures: int  # per username; an address may fail four times as often (several agents behind one NAT)
    window: float  # seconds failures are counted over, and locked out for


class TooManyFailures(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after} s")
        self.retry_after = retry_after


async def _verify(session: AsyncSession, username: str, password: str) -> Agent | None:
    hasher = password_hasher()
    agent = (await session.exec(select(Agent).where(Agent.username == username))).first()
    if agent is None or not agent.active:
        hasher.verify(password, _dummy_hash())
        return None
    valid, new_hash = hasher.verify_and_update(password, agent.password_hash)
    if not valid:
        return None
    if new_hash:
        agent.password_hash = new_hash
        session.add(agent)
        await session.commit()
    return agent


async def _check_throttle(
    session: AsyncSession, limits: LoginLimits, username: str, address: str, now: datetime
) -> None:
    since = now - timedelta(seconds=limits.window)
    recent = select(func.count()).select_from(LoginFailure).where(col(LoginFailure.at) >= since)
    by_name = (await session.exec(recent.where(col(LoginFailure.username) == username))).one()
    by_address = (await session.exec(recent.where(col(LoginFailure.address) == address))).one()
    if by_name >= limits.max_failures or by_address >= 4 * limits.max_failures:
        raise TooManyFailures(int(limits.window))


async def sign_in(
    session: AsyncSession, limits: LoginLimits, username: str, password: str, address: str, now: datetime
) -> Agent | None:
    """The agent these credentials belong to, or None (the failure is counted). Raises `TooManyFailures`
    while the username or the address is locked out, before the password is even checked."""
    await _check_throttle(session, limits, username, address, now)
    agent = await _verify(session, username, password)
    if agent is None:
        session.add(LoginFailure(username=username[:200], address=address[:64], at=now))
        await session.commit()
        return None
    await session.exec(delete(LoginFailure).where(col(LoginFailure.username) == username))
    await session.commit()
    return agent
