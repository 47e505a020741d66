"""The long-lived parts of a running gateway, made in the app's lifespan and handed out by `deps.py`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock
from gateway.conversation.upstream import Upstreams
from gateway.holds import HoldHub
from gateway.inserts import Inserts
from gateway.notices import Listener
from gateway.policy import Policy
from gateway.prompt_templates import Prompts
from gateway.relay.apikeys import KeyCache
from gateway.relay.retries import InFlight
from gateway.review.desk import ReviewDesk
from gateway.scoring.scorer import Scorer
from gateway.settings import Settings
from gateway.webhooks.outbox import Outbox
from gateway.webhooks.sender import Sender

log = logging.getLogger("hitl.runtime")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    inserts: Inserts  # released exchanges are written through it, the cheapest way the database has
    sessions: async_sessionmaker[AsyncSession]
    upstreams: Upstreams
    policy: Policy
    holds: HoldHub
    prompts: Prompts
    scorer: Scorer
    desk: ReviewDesk
    clock: Clock
    outbox: Outbox
    keys: KeyCache
    listener: Listener | None = None  # the LISTEN connection for decisions elsewhere (PostgreSQL only)
    sender: Sender | None = None  # the webhook delivery loop (delivers while this process holds the lease)
    in_flight: InFlight = field(default_factory=InFlight)
    pending: set[asyncio.Task[Any]] = field(default_factory=set)

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run bookkeeping off the request path (e.g. an audit-trail write after the client has its
        answer); the lifespan waits for whatever is still running when the app stops."""
        task = asyncio.get_running_loop().create_task(work)
        self.pending.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    def outlive_client(self, task: asyncio.Task[Any]) -> None:
        """Let a request's own work run to its end if its client hangs up (a streamed answer's upstream call and
        stored exchange); the lifespan waits for it like the rest. Its failure is the request's to report (a
        failed upstream call is recorded and logged where it happens), so it is only taken here, not logged."""
        self.pending.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self.pending.discard(task)
        if not task.cancelled():
            task.exception()

    async def drain(self) -> None:
        await asyncio.gather(*self.pending, return_exceptions=True)
