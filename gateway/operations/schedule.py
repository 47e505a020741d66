"""`hitl learn` on a schedule inside `hitl serve` (`HITL_LEARN__EVERY_SECONDS`): every interval, the process
that holds the `learning` lease runs a turn, as its own `hitl learn` process (scikit-learn's fitting never runs
on the request path's event loop), against this gateway's database and policy file. The holder renews the lease
each interval; another process takes it over only when the holder has not for a turn's time limit."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import uuid

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import leases
from gateway.clock import Clock
from gateway.settings import Settings

log = logging.getLogger(__name__)

LEASE = "learning"
TURN_LIMIT = 600.0  # seconds a turn may take; the lease outlasts it, so no other process starts one meanwhile
OUTCOMES = {0: "applied_or_nothing_new", 3: "refused"}  # `hitl learn`'s exit codes


def command(settings: Settings) -> list[str]:
    learn = settings.learn
    return [
        sys.executable, "-m", "gateway.cli", "learn",
        "--target-escaped-error", repr(learn.target_escaped_error),
        "--confidence", repr(learn.confidence),
        "--min-labels", str(learn.min_labels),
    ]  # fmt: skip


def environment(settings: Settings) -> dict[str, str]:
    """This process's environment, with the database and policy file it serves (settings given in code, as
    tests give them, are not in the environment)."""
    env = {**os.environ, "HITL_DATABASE_URL": settings.database_url}
    if settings.policy_path is not None:
        env["HITL_POLICY_PATH"] = str(settings.policy_path)
    else:
        env.pop("HITL_POLICY_PATH", None)
    return env


async def run(sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
    every = settings.learn.every_seconds
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    while True:
        await asyncio.sleep(every)
        try:
            if not await leases.hold(sessions, LEASE, holder, every + TURN_LIMIT, clock.now()):
                continue  # another process runs this turn
            process = await asyncio.create_subprocess_exec(
                *command(settings),
                env=environment(settings),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except (OSError, SQLAlchemyError) as exc:  # the database or the process table: try again next turn
            log.warning("learn_turn outcome=not_started error=%s", type(exc).__name__)
            continue
        try:
            await asyncio.wait_for(process.wait(), TURN_LIMIT)
        except TimeoutError:
            pass
        finally:  # past the limit, or the gateway stopping: the turn ends (a policy version is its last write)
            if process.returncode is None:
                process.kill()
                await asyncio.shield(process.wait())
        outcome = OUTCOMES.get(process.returncode or 0, "failed")
        if outcome == "failed":
            log.error("learn_turn outcome=failed exit=%s", process.returncode)
        else:
            log.info("learn_turn outcome=%s", outcome)
