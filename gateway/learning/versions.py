"""The policy versions `hitl learn` records: which one is in force, the trail of all of them, and the
rollback that steps back one.

A learned version rides on the policy file it was made from (its `base`): it is in force only while that
file is the one the gateway loads. An operator who edits the file has written a new policy, and the learned
versions of the old one stop applying, with a warning, until `hitl learn` runs again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import policy
from gateway.learning import store
from gateway.models import PolicyVersion, PolicyVersionStatus
from gateway.policy import Policy, PolicyError
from gateway.scoring.calibrator import Calibrators

log = logging.getLogger(__name__)


async def record(
    session: AsyncSession,
    *,
    text: str,
    base: str,
    status: PolicyVersionStatus,
    reason: str,
    figures: dict[str, Any],
    labels: int,
) -> PolicyVersion:
    row = PolicyVersion(
        version=policy.parse(text, "<learned policy>").version,
        base=base,
        text=text,
        status=status,
        reason=reason,
        figures=figures,
        labels=labels,
    )
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


async def in_force(session: AsyncSession, base: str) -> PolicyVersion | None:
    """The newest applied version made from the policy file `base`, if there is one."""
    query = (
        select(PolicyVersion)
        .where(col(PolicyVersion.base) == base, col(PolicyVersion.status) == PolicyVersionStatus.APPLIED)
        .order_by(col(PolicyVersion.id).desc())
        .limit(1)
    )
    return (await session.exec(query)).first()


async def newest(session: AsyncSession, base: str) -> PolicyVersion | None:
    """The newest version recorded over the policy file `base`, whatever became of it."""
    query = select(PolicyVersion).where(col(PolicyVersion.base) == base).order_by(col(PolicyVersion.id).desc())
    return (await session.exec(query.limit(1))).first()


async def history(session: AsyncSession, limit: int) -> list[PolicyVersion]:
    query = select(PolicyVersion).order_by(col(PolicyVersion.id).desc()).limit(limit)
    return list((await session.exec(query)).all())


async def rollback(
    session: AsyncSession, base: str, now: datetime
) -> tuple[PolicyVersion, PolicyVersion | None] | None:
    """Take the version in force out of force: the one before it (or the file) routes again. Returns the
    version rolled back and the one now in force (None: the file), or None when no learned version was."""
    current = await in_force(session, base)
    if current is None:
        return None
    current.status = PolicyVersionStatus.ROLLED_BACK
    current.rolled_back_at = now
    session.add(current)
    await session.commit()
    return current, await in_force(session, base)


@dataclass(frozen=True)
class Routing:
    """The policy that routes, with the calibrators it names, and the learned version it came from."""

    policy: Policy
    calibrators: Calibrators
    learned: int | None  # the policy version's id; None: the file as written


async def routing(sessions: async_sessionmaker[AsyncSession], file_policy: Policy, starting: bool = True) -> Routing:
    """What routes now: the learned version in force over `file_policy`, or the file itself. `starting`: say so
    when learned versions exist only for another policy file (once, at start-up, not at every check)."""
    async with sessions() as session:
        found = await in_force(session, file_policy.version)
        stale = await _learned_elsewhere(session, file_policy.version) if found is None and starting else None
    if found is None:
        if stale is not None:
            log.warning(
                "policy_file_changed learned_version=%s base=%s file=%s: routing by the file; run `hitl learn` again",
                stale.id,
                stale.base,
                file_policy.version,
            )
        return Routing(file_policy, await store.for_policy(sessions, file_policy), None)
    try:
        learned = policy.parse(found.text, f"<policy version {found.id}>")
        return Routing(learned, await store.for_policy(sessions, learned), found.id)
    except PolicyError as exc:
        log.error("policy_version_unusable learned_version=%s error=%s: routing by the file", found.id, exc)
        return Routing(file_policy, await store.for_policy(sessions, file_policy), None)


async def _learned_elsewhere(session: AsyncSession, base: str) -> PolicyVersion | None:
    """A version applied on top of another policy file than `base`."""
    query = (
        select(PolicyVersion)
        .where(col(PolicyVersion.base) != base, col(PolicyVersion.status) == PolicyVersionStatus.APPLIED)
        .order_by(col(PolicyVersion.id).desc())
        .limit(1)
    )
    return (await session.exec(query)).first()
