"""The long-lived parts of a running gateway, made in the app's lifespan and handed out by `deps.py`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock
from gateway.holds import HoldHub
from gateway.notices import Listener
from gateway.policy import Policy
from gateway.prompt_templates import Prompts
from gateway.relay.apikeys import KeyCache
from gateway.relay.service import Relay
from gateway.review.desk import ReviewDesk
from gateway.scoring.scorer import Scorer
from gateway.settings import Settings
from gateway.webhooks.outbox import Outbox
from gateway.webhooks.sender import Sender

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    relay: Relay  # the request path
    policy: Policy
    holds: HoldHub
    prompts: Prompts
    scorer: Scorer
    desk: ReviewDesk
    clock: Clock
    outbox: Outbox
    keys: KeyCache
    reader: AsyncEngine | None = None  # long reads (the Insights figures); None: `engine`
    listener: Listener | None = None  # the LISTEN connection for decisions elsewhere (PostgreSQL only)
    sender: Sender | None = None  # the webhook delivery loop (delivers while this process holds the lease)
    draining: bool = False  # SIGTERM arrived: /health/ready says 503 while the replica still serves

    @property
    def reads(self) -> AsyncEngine:
        """The engine the Insights figures read through (`db.create_reader`)."""
        return self.reader or self.engine

    def read_sessions(self) -> AsyncSession:
        return AsyncSession(self.reads, expire_on_commit=False)

    async def reading(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` in a session of its own on the reads' engine (the figures of a page, each on its connection)."""
        async with self.read_sessions() as session:
            return await work(session)

    def start_draining(self) -> None:
        self.draining = True
