"""Decisions announced across processes.

On PostgreSQL a decision sends `NOTIFY hitl_decided, '<review id>'` inside its own transaction, so the
notice goes out when the decision commits and never before; each process keeps one `LISTEN` connection and
hands every notice to its hold hub. A notice is lost when no connection listens (a restart, a dropped
connection): the listener reconnects with backoff and asks the hub for one batched poll each time it
(re)connects, and the hub's periodic poll catches anything else. SQLite has no notices: there the hub's
batched poll is how one process learns of another's decisions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg
from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

log = logging.getLogger("hitl.notices")
CHANNEL = "hitl_decided"


async def announce(session: AsyncSession, review_id: str) -> None:
    """Queue the notice in the session's transaction: PostgreSQL delivers it on commit, or never."""
    if session.get_bind().dialect.name == "postgresql":
        await session.exec(select(func.pg_notify(CHANNEL, review_id)))


def _conninfo(url: str) -> str:
    """libpq's form of the SQLAlchemy URL (`postgresql+psycopg://` is SQLAlchemy's, not libpq's)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """One LISTEN connection for the process, kept open: `on_notice(review_id)` for every notice, and
    `on_connect()` each time it (re)connects, since notices sent while it was away are gone."""

    def __init__(
        self,
        url: str,
        on_notice: Callable[[str], None],
        on_connect: Callable[[], Awaitable[None]],
        *,
        backoff: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        self._conninfo = _conninfo(url)
        self._on_notice = on_notice
        self._on_connect = on_connect
        self._backoff = backoff
        self.connected = asyncio.Event()  # set while listening; tests and health checks read it
        self.connections = 0  # how many times it has connected

    async def run(self) -> None:
        delay = self._backoff[0]
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.connections += 1
                    self.connected.set()
                    delay = self._backoff[0]
                    await self._on_connect()
                    async for notice in connection.notifies():
                        self._on_notice(notice.payload)
            except psycopg.Error as exc:
                log.warning("decision notices: connection lost (%s); reconnecting in %.1f s", type(exc).__name__, delay)
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])
