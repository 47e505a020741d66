"""The period in buckets (hours for a period of two days or less, else days, in UTC), for the page's small charts
and a team's own: per bucket the exchanges that arrived, how many were held and how many failed upstream, the
upstream's latency (p50, p90 of the answered), and the backlog at the bucket's end.

The backlog counts the scope's held answers that had arrived and were not yet decided; a review its client
cancelled (a background response) leaves no time of leaving, so it is not counted at all. Four passes over the
period's rows, grouped by bucket in the database; the percentiles are ranked per bucket there too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.insights.scope import Scope
from gateway.models import Exchange, Review, ReviewKind, ReviewStatus, Route

HOURLY_UP_TO = timedelta(days=2)
COLUMNS = ("start", "volume", "held", "failed", "latency_ms_p50", "latency_ms_p90", "backlog")


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
        counted = (
            select(
                bucket,
                func.count(),
                func.sum(case((col(Exchange.route) == Route.HOLD, 1), else_=0)),
                func.sum(case((col(Exchange.route) == Route.NONE, 1), else_=0)),
            )  # fmt: skip
            .where(*within)
            .group_by(bucket)
        )
        arrivals: dict[datetime, tuple[int, int, int]] = {
            _start(start): (volume, held or 0, failed or 0)
            for start, volume, held, failed in (await session.exec(counted)).all()
        }
        latency = await _latency(session, bucket, within)
        backlog = await _backlog(session, width, within)
    buckets = []
    waiting = 0
    for start in _starts(scope, width, now):
        volume, held, failed = arrivals.get(start, (0, 0, 0))
        waiting += backlog.get(start, 0)
        p50, p90 = latency.get(start, (None, None))
        buckets.append({"start": start.isoformat(), "volume": volume, "held": held, "failed": failed,
                        "latency_ms_p50": p50, "latency_ms_p90": p90, "backlog": waiting})  # fmt: skip
    return {"scope": scope.described(), "bucket": "hour" if width < timedelta(days=1) else "day", "buckets": buckets}


async def _latency(session: AsyncSession, bucket: Any, within: list[Any]) -> dict[datetime, tuple[float, float]]:
    """Each bucket's nearest-rank p50 and p90 of the answered exchanges' upstream time (ranks ceil(n/2) and
    ceil(9n/10), in integers), ranked by the database within each bucket."""
    ms = col(Exchange.upstream_ms)
    ranked = (
        select(
            bucket.label("start"),
            ms.label("ms"),
            func.row_number().over(partition_by=bucket, order_by=ms).label("rank"),
            func.count().over(partition_by=bucket).label("n"),
        )  # fmt: skip
        .where(col(Exchange.route) != Route.NONE, *within)
        .subquery()
    )
    rank, n = ranked.c["rank"], ranked.c["n"]
    p50, p90 = (n + 1) // 2, (n * 9 + 9) // 10
    picked = select(ranked.c["start"], rank, p50, ranked.c["ms"]).where(or_(rank == p50, rank == p90))
    found: dict[datetime, dict[str, float]] = {}
    for start, at, middle, ms_value in (await session.exec(picked)).all():
        found.setdefault(_start(start), {})["p50" if at == middle else "p90"] = round(float(ms_value), 3)
    return {start: (pair.get("p50", pair.get("p90", 0.0)), pair.get("p90", pair.get("p50", 0.0)))
            for start, pair in found.items()}  # fmt: skip


async def _backlog(session: AsyncSession, width: timedelta, within: list[Any]) -> Counter[datetime]:
    """How the backlog moved in each bucket: held answers that arrived, less those decided."""
    held = and_(col(Review.kind) == ReviewKind.HOLD, col(Review.status) != ReviewStatus.CANCELLED)
    moved: Counter[datetime] = Counter()
    arrived = _bucket(session, col(Review.created_at), width)
    came = select(arrived, func.count()).select_from(Review).join(Exchange).where(held, *within).group_by(arrived)
    for start, count in (await session.exec(came)).all():
        moved[_start(start)] += count
    left = _bucket(session, col(Review.decided_at), width)
    went = (
        select(left, func.count())
        .select_from(Review)
        .join(Exchange)
        .where(held, col(Review.decided_at).is_not(None), *within)
        .group_by(left)
    )
    for start, count in (await session.exec(went)).all():
        moved[_start(start)] -= count
    return moved


def rows(found: dict[str, Any]) -> Iterator[list[Any]]:
    for bucket in found["buckets"]:
        yield ["" if bucket[name] is None else bucket[name] for name in COLUMNS]
