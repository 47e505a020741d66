"""Stored calibrators: what `hitl calibrate` saves, and the one a policy names, loaded at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Calibration
from gateway.policy import Policy, PolicyError
from gateway.scoring.calibrator import Calibrator, Method


async def save(session: AsyncSession, calibrator: Calibrator, metrics: dict[str, Any], labels: int) -> Calibration:
    row = Calibration(method=calibrator.method, params=calibrator.params, metrics=metrics, labels=labels)
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row


@dataclass(frozen=True)
class Active:
    """The calibrator a policy names, ready for the request path."""

    calibrator: Calibrator
    version: str


async def for_policy(sessions: async_sessionmaker[AsyncSession], policy: Policy) -> Active | None:
    if policy.calibrator is None:
        return None
    async with sessions() as session:
        row = await session.get(Calibration, policy.calibrator)
    if row is None:
        raise PolicyError(
            f"policy {policy.version} names calibrator {policy.calibrator}, which is not in the database"
            " (`hitl calibrate` stores calibrators)"
        )
    if row.method not in get_args(Method):
        raise PolicyError(f"calibrator {row.version} was stored with an unknown method {row.method!r}")
    method: Method = "isotonic" if row.method == "isotonic" else "logistic"
    return Active(Calibrator(method, row.params), row.version)
