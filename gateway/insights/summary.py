"""The period's figures for a team lead, counted in the database over the exchanges a `Scope` takes:

- volume, and the shares released, held and drawn for audit (of the answered ones: a failed call is no answer);
- decisions by kind, and how often agents override or edit (of the decisions that close a review);
- time to decision (p50, p90) of held answers, and the share decided while their client was still waiting;
- what waiting clients got when their deadline passed;
- the backlog: the period's held answers still open, and how long the oldest has waited;
- upstream failures by kind, and the upstream's latency (p50, p90).

`rows()` is the same as (figure, value) pairs, for a CSV.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, func
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.insights import spans
from gateway.insights.scope import Scope
from gateway.models import (
    Action,
    Decision,
    Exchange,
    Review,
    ReviewKind,
    ReviewStatus,
    Route,
)

CLOSING = (Action.APPROVE, Action.EDIT, Action.OVERRIDE)


async def _ranked(session: AsyncSession, query: Any, by: Any, count: int) -> tuple[float | None, float | None]:
    """The nearest-rank p50 and p90 of what `query` selects, found by the database in one pass (each the value at
    rank ceil(share * count) in `by`'s order), so no row leaves the database but those two."""
    if not count:
        return None, None
    ranks = [max(1, math.ceil(share * count)) for share in (0.5, 0.9)]
    ranked = query.add_columns(func.row_number().over(order_by=by).label("rank")).subquery()
    value, rank = ranked.c[0], ranked.c["rank"]
    found = dict((await session.exec(select(rank, value).where(rank.in_(ranks)))).all())
    p50, p90 = (found.get(rank) for rank in ranks)
    # SQLite's julianday() is exact to the millisecond.
    return (None if p50 is None else round(float(p50), 3)), (None if p90 is None else round(float(p90), 3))


def _count(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _age(now: datetime, since: Any) -> float | None:
    """Seconds from `since` to `now`; SQLite's MIN() hands back the stored text, not a datetime."""
    if since is None:
        return None
    when = since if isinstance(since, datetime) else datetime.fromisoformat(str(since))
    return (now - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds()


async def summary(engine: AsyncEngine, scope: Scope, now: datetime) -> dict[str, Any]:
    """Five passes over the period's rows, each an index range on `exchanges.created_at`: the exchanges' routes,
    deadline outcomes and failures; the reviews' counts; the decisions by kind; and the two percentiles."""
    within = scope.conditions()
    async with AsyncSession(engine) as session:
        grouped = (
            select(Exchange.route, Exchange.deadline_outcome, Exchange.error_kind, func.count())
            .where(*within)
            .group_by(col(Exchange.route), col(Exchange.deadline_outcome), col(Exchange.error_kind))
        )
        by_route: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        for route, outcome, error, count in (await session.exec(grouped)).all():
            by_route[route] += count
            if outcome is not None:
                outcomes[str(outcome)] += count
            if route == Route.NONE:
                failures[str(error or "unknown")] += count
        held = col(Review.kind) == ReviewKind.HOLD
        closed = and_(held, col(Review.status) == ReviewStatus.DECIDED, col(Review.decided_at).is_not(None))
        waiting = and_(held, col(Review.status) == ReviewStatus.OPEN)
        counts = [_count(col(Review.kind) == ReviewKind.AUDIT), _count(closed),
                  _count(and_(closed, col(Review.decided_at) <= col(Review.deadline_at))), _count(waiting),
                  func.min(case((waiting, col(Review.created_at))))]  # fmt: skip
        counted = sa_select(*counts).select_from(Review).join(Exchange).where(scope.reviewed(), *within)
        connection = await session.connection()  # a Core statement: five columns, past sqlmodel's overloads
        audits, decided, in_time, backlog, oldest = (await connection.execute(counted)).one()
        decisions = (
            select(Decision.action, func.count())
            .join(Review, col(Decision.review_id) == col(Review.id))
            .join(Exchange, col(Review.exchange_id) == col(Exchange.id))
            .where(scope.reviewed(), scope.decided(), *within)
            .group_by(Decision.action)
        )
        actions: dict[str, int] = dict((await session.exec(decisions)).all())
        took = spans.seconds_between(session, col(Review.created_at), col(Review.decided_at))
        waits = select(took).select_from(Review).join(Exchange).where(closed, scope.reviewed(), *within)
        wait_p50, wait_p90 = await _ranked(session, waits, took, decided)
        volume = sum(by_route.values())
        answered = volume - by_route.get(Route.NONE, 0)
        ms = col(Exchange.upstream_ms)
        latency = await _ranked(session, select(ms).where(col(Exchange.route) != Route.NONE, *within), ms, answered)
    closing = sum(actions.get(action, 0) for action in CLOSING)
    return {
        "scope": scope.described(),
        "volume": volume,
        "answered": answered,
        "shares": {
            "released": _share(by_route.get(Route.RELEASE, 0), answered),
            "held": _share(by_route.get(Route.HOLD, 0), answered),
            "audited": _share(audits or 0, answered),
        },
        "decisions": {str(action): actions.get(action, 0) for action in Action},
        "rates": {
            "override": _share(actions.get(Action.OVERRIDE, 0), closing),
            "edit": _share(actions.get(Action.EDIT, 0), closing),
        },  # fmt: skip
        "time_to_decision_s": {"p50": wait_p50, "p90": wait_p90, "decided": decided},
        "decided_while_waiting": _share(in_time, decided),
        "deadline_outcomes": dict(sorted(outcomes.items())),
        "backlog": {"open": backlog, "oldest_waiting_s": _age(now, oldest)},
        "upstream": {
            "failures": dict(sorted(failures.items())),
            "failure_rate": _share(volume - answered, volume),
            "latency_ms": {"p50": latency[0], "p90": latency[1]},
        },
    }


def rows(found: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """The summary as (figure, value) pairs, nested names joined by dots; the scope first."""
    for key, value in found.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from rows(value, f"{name}.")
        else:
            yield name, "" if value is None else value
