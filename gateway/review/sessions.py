"""Console sessions, server-side: a login makes a random token (the cookie carries it, the database keeps its
SHA-256), every console request looks it up, and logging out, a new password or a disabled account ends it
at once, whatever copies of the cookie exist."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Agent, ConsoleSession


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(session: AsyncSession, agent: Agent, now: datetime) -> str:
    """A new session for `agent`; its token, for the cookie."""
    assert agent.id is not None
    token = secrets.token_urlsafe(32)
    session.add(ConsoleSession(token_hash=_hash(token), agent_id=agent.id, created_at=now))
    await session.commit()
    return token


async def agent_of(session: AsyncSession, token: str, now: datetime, max_age: float) -> Agent | None:
    """The active agent whose live session this is; None when it ended, is older than `max_age` seconds, or
    its account is disabled."""
    found = (
        await session.exec(
            select(Agent)
            .join(ConsoleSession, col(ConsoleSession.agent_id) == col(Agent.id))
            .where(col(ConsoleSession.token_hash) == _hash(token), col(ConsoleSession.ended_at).is_(None))
            .where(col(ConsoleSession.created_at) > now - timedelta(seconds=max_age), col(Agent.active))
        )
    ).first()
    return found


async def end(session: AsyncSession, token: str, now: datetime) -> None:
    ending = col(ConsoleSession.token_hash) == _hash(token)
    await session.exec(
        update(ConsoleSession).where(ending, col(ConsoleSession.ended_at).is_(None)).values(ended_at=now)
    )
    await session.commit()


async def end_all(session: AsyncSession, agent_id: int, now: datetime) -> None:
    """End every session of an agent (a new password, a disabled account); the caller commits."""
    await _end(session, col(ConsoleSession.agent_id) == agent_id, now)


async def _end(session: AsyncSession, which: ColumnElement[bool], now: datetime) -> None:
    live = col(ConsoleSession.ended_at).is_(None)
    await session.exec(update(ConsoleSession).where(which, live).values(ended_at=now))
