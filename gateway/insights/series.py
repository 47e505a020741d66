"""The period in buckets (hours for a period of two days or less, else days, in UTC), for the page's small charts
and a team's own: per bucket the exchanges that arrived, how many were held and how many failed upstream, the
upstream's mean latency (of the answered; the period's p50 and p90 are the summary's), and the backlog at the
bucket's end.

The backlog counts the scope's held answers that had arrived and were not yet decided; a review its client
cancelled (a background response) leaves no time of leaving, so it is not counted at all. Two passes over the
period's rows, grouped by bucket in the database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.insights.scope import Scope
from gateway.models import Exchange, Review, ReviewKind, ReviewStatus, Route

HOURLY_UP_TO = timedelta(days=2)
COLUMNS = ("start", "volume", "held", "failed", "latency_ms_mean", "backlog")


def _width(scope: Scope) -> timedelta:
    return timedelta(hours=1) if scope.until - scope.since <= HOURLY_UP_TO else timedelta(days=1)


def _bucket(session: AsyncSession, when: Any, width: timedelta) -> Any:
    """The start of `when`'s bucket in UTC, as the database writes it: text on SQLite, a timestamp on PostgreSQL."""
    hourly = width < timedelta(days=1)
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour" if hourly else "day", func.timezone("UTC", when))
    return func.strftime("%Y-%m-%d %H:00:00" if hourly else "%Y-%m-%d 00:00:00", when)


def _start(value: Any) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _starts(scope: Scope, width: timedelta, now: datetime) -> list[datetime]:
    """Every bucket of the period that has begun, the first the one `since` falls in."""
    first = scope.since.replace(minute=0, second=0, microsecond=0)
    if width >= timedelta(days=1):
        first = first.replace(hour=0)
    starts, at = [], first
    while at < min(scope.until, now):
        starts.append(at)
        at += width
    return starts


async def series(engine: AsyncEngine, scope: Scope, now: datetime) -> dict[str, Any]:
    within = scope.conditions()
    width = _width(scope)
    async with AsyncSession(engine) as session:
        bucket = _bucket(session, col(Exchange.created_at), width)
        answered = col(Exchange.route) != Route.NONE
        counted = (
            sa_select(
                bucket,
                func.count(),
                func.sum(case((col(Exchange.route) == Route.HOLD, 1), else_=0)),
                func.sum(case((col(Exchange.route) == Route.NONE, 1), else_=0)),
                func.avg(case((answered, col(Exchange.upstream_ms)))),
            )  # fmt: skip
            .where(*within)
            .group_by(bucket)
        )
        connection = await session.connection()  # a Core statement of five columns, past sqlmodel's overloads
        arrivals: dict[datetime, tuple[int, int, int, float | None]] = {
            _start(start): (volume, held or 0, failed or 0, None if mean is None else round(float(mean), 3))
            for start, volume, held, failed, mean in (await connection.execute(counted)).all()
        }
        backlog = await _backlog(session, width, [scope.reviewed(), *within])
    buckets = []
    waiting = 0
    for start in _starts(scope, width, now):
        volume, held, failed, mean = arrivals.get(start, (0, 0, 0, None))
        waiting += backlog.get(start, 0)
        buckets.append({"start": start.isoformat(), "volume": volume, "held": held, "failed": failed,
                        "latency_ms_mean": mean, "backlog": waiting})  # fmt: skip
    return {"scope": scope.described(), "bucket": "hour" if width < timedelta(days=1) else "day", "buckets": buckets}


async def _backlog(session: AsyncSession, width: timedelta, within: list[Any]) -> Counter[datetime]:
    """How the backlog moved in each bucket: held answers that arrived, less those decided; one pass, grouped by
    the bucket each arrived in and the one it was decided in."""
    held = and_(col(Review.kind) == ReviewKind.HOLD, col(Review.status) != ReviewStatus.CANCELLED)
    arrived = _bucket(session, col(Review.created_at), width)
    left = _bucket(session, col(Review.decided_at), width)
    moves = select(arrived, left, func.count()).select_from(Review).join(Exchange).where(held, *within)
    moved: Counter[datetime] = Counter()
    for came, went, count in (await session.exec(moves.group_by(arrived, left))).all():
        moved[_start(came)] += count
        if went is not None:
            moved[_start(went)] -= count
    return moved


def rows(found: dict[str, Any]) -> Iterator[list[Any]]:
    for bucket in found["buckets"]:
        yield ["" if bucket[name] is None else bucket[name] for name in COLUMNS]
