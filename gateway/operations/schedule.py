"""Commands on a schedule inside `hitl serve`: `hitl learn` every `HITL_LEARN__EVERY_SECONDS`, `hitl purge`
every `HITL_RETENTION__EVERY_SECONDS` and `hitl notify` every `HITL_NOTIFY__EVERY_SECONDS`. Every interval, the
process that holds the job's lease runs it as its own `hitl` process (scikit-learn's fitting and a purge's
deletes never run on the request path's event loop),
against this gateway's database and policy file. The holder renews the lease each interval; another process
takes it over only when the holder has not for a run's time limit."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import leases
from gateway.clock import Clock
from gateway.settings import Settings

log = logging.getLogger(__name__)

TURN_LIMIT = 600.0  # seconds a run may take; the lease outlasts it, so no other process starts one meanwhile


@dataclass(frozen=True)
class Job:
    name: str  # its lease, and its name in the log
    every: float  # seconds between runs
    arguments: list[str]  # of `hitl`
    outcomes: dict[int, str]  # exit code -> what it means (any other: failed)


def jobs(settings: Settings) -> list[Job]:
    """The scheduled jobs the settings turn on."""
    learn, retention = settings.learn, settings.retention
    found = []
    if learn.every_seconds > 0:
        arguments = [
            "learn",
            "--target-escaped-error", repr(learn.target_escaped_error),
            "--confidence", repr(learn.confidence),
            "--min-labels", str(learn.min_labels),
        ]  # fmt: skip
        found.append(Job("learning", learn.every_seconds, arguments, {0: "applied_or_nothing_new", 3: "refused"}))
    if retention.every_seconds > 0:
        found.append(Job("retention", retention.every_seconds, ["purge"], {0: "purged"}))
    if settings.notify.every_seconds > 0:
        found.append(Job("notifications", settings.notify.every_seconds, ["notify"], {0: "sent_or_nothing_due"}))
    return found


def environment(settings: Settings) -> dict[str, str]:
    """This process's environment, with the database, policy file and retention it serves (settings given in
    code, as tests give them, are not in the environment)."""
    env = {
        **os.environ,
        "HITL_DATABASE_URL": settings.database_url,
        "HITL_RETENTION__DAYS": repr(settings.retention.days),
        "HITL_RETENTION__KEEP": settings.retention.keep,
    }
    if settings.policy_path is not None:
        env["HITL_POLICY_PATH"] = str(settings.policy_path)
    else:
        env.pop("HITL_POLICY_PATH", None)
    return env


async def run(job: Job, sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    while True:
        await asyncio.sleep(job.every)
        try:
            if not await leases.hold(sessions, job.name, holder, job.every + TURN_LIMIT, clock.now()):
                continue  # another process runs this one
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", *job.arguments,
                env=environment(settings),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, SQLAlchemyError) as exc:  # the database or the process table: try again next time
            log.warning("scheduled_job job=%s outcome=not_started error=%s", job.name, type(exc).__name__)
            continue
        try:
            await asyncio.wait_for(process.wait(), TURN_LIMIT)
        except TimeoutError:
            pass
        finally:  # past the limit, or the gateway stopping: the run ends (each command commits once, at its end)
            if process.returncode is None:
                process.kill()
                await asyncio.shield(process.wait())
        outcome = job.outcomes.get(process.returncode or 0, "failed")
        if outcome == "failed":
            log.error("scheduled_job job=%s outcome=failed exit=%s", job.name, process.returncode)
        else:
            log.info("scheduled_job job=%s outcome=%s", job.name, outcome)
