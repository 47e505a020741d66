"""Stored calibrators: what `hitl calibrate` saves, and the ones a policy names, loaded at start-up."""

from __future__ import annotations

from typing import Any, get_args

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Calibration
from gateway.policy import Policy, PolicyError
from gateway.scoring.calibrator import Active, Calibrator, Calibrators, Method


async def save(session: AsyncSession, calibrator: Calibrator, metrics: dict[str, Any], labels: int) -> Calibration:
    row = Calibration(method=calibrator.method, params=calibrator.params, metrics=metrics, labels=labels)
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


async def for_policy(sessions: async_sessionmaker[AsyncSession], policy: Policy) -> Calibrators:
    """The stored calibrators `policy` names, by calibration group; a name not in the database is an error."""
    named = sorted(policy.calibrators)
    async with sessions() as session:
        rows = {row.id: row for row in (await session.exec(select(Calibration).where(col(Calibration.id).in_(named))))}
    loaded: dict[int, Active] = {}
    for number in named:
        row = rows.get(number)
        if row is None:
            raise PolicyError(
                f"policy {policy.version} names calibrator {number}, which is not in the database"
                " (`hitl calibrate` stores calibrators)"
            )
        if row.method not in get_args(Method):
            raise PolicyError(f"calibrator {row.version} was stored with an unknown method {row.method!r}")
        method: Method = "isotonic" if row.method == "isotonic" else "logistic"
        loaded[number] = Active(Calibrator(method, row.params), row.version)
    groups = {name: loaded[group.calibrator] for name, group in policy.spec.models.items()}
    return Calibrators(loaded[policy.calibrator] if policy.calibrator is not None else None, groups)
