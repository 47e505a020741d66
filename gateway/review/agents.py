"""Support agents' accounts. Passwords are hashed with argon2 through pwdlib."""

from __future__ import annotations

from functools import cache

from pwdlib import PasswordHash
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.models import Agent, Role, utcnow
from gateway.review import sessions

MIN_PASSWORD = 8


@cache
def password_hasher() -> PasswordHash:
    """argon2 with pwdlib's recommended parameters, made on first use."""
    return PasswordHash.recommended()


def _checked(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"A password needs at least {MIN_PASSWORD} characters.", param="password")
    return password


async def create(session: AsyncSession, username: str, password: str, role: Role) -> Agent:
    username = username.strip()
    if not username:
        raise InvalidRequest("A username cannot be empty.", param="username")
    if (await session.exec(select(Agent).where(Agent.username == username))).first():
        raise Conflict(f"There is already an agent called {username!r}.")
    agent = Agent(username=username, password_hash=password_hasher().hash(_checked(password)), role=role)
    session.add(agent)
    await session.commit()
    await session.refresh(agent)
    return agent


async def _named(session: AsyncSession, username: str) -> Agent:
    agent = (await session.exec(select(Agent).where(Agent.username == username))).first()
    if agent is None:
        raise NotFound(f"No agent called {username!r}.")
    return agent


async def set_password(session: AsyncSession, username: str, password: str) -> Agent:
    """A new password; every session signed in with the old one ends."""
    agent = await _named(session, username)
    agent.password_hash = password_hasher().hash(_checked(password))
    session.add(agent)
    assert agent.id is not None
    await sessions.end_all(session, agent.id, utcnow())
    await session.commit()
    return agent


async def count(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(Agent))).one()


async def set_active(session: AsyncSession, username: str, active: bool) -> Agent:
    """Disable an account (its sessions end: they stay ended if it is enabled again) or enable it again."""
    agent = await _named(session, username)
    agent.active = active
    session.add(agent)
    if not active:
        assert agent.id is not None
        await sessions.end_all(session, agent.id, utcnow())
    await session.commit()
    return agent


async def listing(session: AsyncSession) -> list[Agent]:
    return list((await session.exec(select(Agent).order_by(Agent.username))).all())
