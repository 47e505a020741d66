"""Deadline warnings from the serving processes: a waiting client's deadline is seconds away, too soon for a
scheduled `hitl notify` turn, so every `hitl serve` process looks each `TICK` seconds for held reviews whose
client's wait ends within their tier's `notify.deadline`, and the one whose insert makes a warning (its key is
unique) sends it at once. A send that fails is retried by `hitl notify`'s turns, as every notification is."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

import httpx
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import Clock
from gateway.notifications import delivery, due
from gateway.policy import Policy
from gateway.settings import NotifySettings

log = logging.getLogger("hitl.notifications")
TICK = 1.0


async def turn(
    sessions: async_sessionmaker[AsyncSession],
    policy: Policy,
    settings: NotifySettings,
    client: httpx.AsyncClient,
    clock: Clock,
) -> Counter[str]:
    """Make and send the deadline warnings due now; how their sends went (none when no tier asks for them)."""
    tally: Counter[str] = Counter()
    if not any(notify.deadline is not None for notify in policy.spec.notify.values()):
        return tally
    now = clock.now()
    async with sessions() as session:
        found = await due.near_deadline(session, policy, settings.console_url, now)
    for notification in found:
        async with sessions() as session:
            session.add(notification)
            try:
                await session.commit()
            except IntegrityError:
                continue  # another process made it first: it sends it
            tally[await delivery.attempt(session, settings, client, notification, clock.now())] += 1
    return tally


async def watch(
    sessions: async_sessionmaker[AsyncSession], policy: Callable[[], Policy], settings: NotifySettings, clock: Clock
) -> None:
    """`turn` every `TICK` seconds with the policy in force, until cancelled; a database that fails is tried again
    on the next tick."""
    async with httpx.AsyncClient() as client:
        while True:
            try:
                sent = await turn(sessions, policy(), settings, client, clock)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("deadline_warnings outcome=not_checked error=%s", type(exc).__name__)
            else:
                if sent:
                    log.info("deadline_warnings %s", " ".join(f"{key}={value}" for key, value in sorted(sent.items())))
            await asyncio.sleep(TICK)
