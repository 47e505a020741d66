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
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.insights.scope import Scope
from gateway.models import (
    Action,
    Decision,
    Exchange,
    ExchangeStatus,
    Review,
    ReviewKind,
    ReviewStatus,
    Route,
)

CLOSING = (Action.APPROVE, Action.EDIT, Action.OVERRIDE)


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile of `values` (None for none): the smallest value at least `share` of them reach."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _age(now: datetime, since: Any) -> float | None:
    """Seconds from `since` to `now`; SQLite's MIN() hands back the stored text, not a datetime."""
    if since is None:
        return None
    when = since if isinstance(since, datetime) else datetime.fromisoformat(str(since))
    return (now - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds()


async def summary(engine: AsyncEngine, scope: Scope, now: datetime) -> dict[str, Any]:
    within = scope.conditions()
    held = (col(Review.kind) == ReviewKind.HOLD, *within)
    async with AsyncSession(engine) as session:
        routes = select(Exchange.route, func.count()).where(*within).group_by(Exchange.route)
        by_route: dict[str, int] = dict((await session.exec(routes)).all())
        audited = select(func.count()).select_from(Review).join(Exchange)
        audits = (await session.exec(audited.where(col(Review.kind) == ReviewKind.AUDIT, *within))).one()
        decisions = (
            select(Decision.action, func.count())
            .join(Review, col(Decision.review_id) == col(Review.id))
            .join(Exchange, col(Review.exchange_id) == col(Exchange.id))
            .where(*within)
            .group_by(Decision.action)
        )
        actions: dict[str, int] = dict((await session.exec(decisions)).all())
        times = select(Review.created_at, Review.decided_at, Review.deadline_at).join(Exchange)
        decided = (await session.exec(times.where(col(Review.status) == ReviewStatus.DECIDED, *held))).all()
        ends = (
            select(Exchange.deadline_outcome, func.count())
            .where(col(Exchange.deadline_outcome).is_not(None), *within)
            .group_by(Exchange.deadline_outcome)
        )
        outcomes = {str(outcome): count for outcome, count in (await session.exec(ends)).all()}
        waiting = select(func.count(), func.min(Review.created_at)).select_from(Review).join(Exchange)
        backlog, oldest = (await session.exec(waiting.where(col(Review.status) == ReviewStatus.OPEN, *held))).one()
        failed = (
            select(Exchange.error_kind, func.count())
            .where(col(Exchange.status) == ExchangeStatus.FAILED, *within)
            .group_by(Exchange.error_kind)
        )
        failures: dict[str | None, int] = dict((await session.exec(failed)).all())
        answered_ms = select(Exchange.upstream_ms).where(col(Exchange.status) != ExchangeStatus.FAILED, *within)
        latency = list((await session.exec(answered_ms)).all())
    volume = sum(by_route.values())
    answered = volume - by_route.get(Route.NONE, 0)
    closing = sum(actions.get(action, 0) for action in CLOSING)
    waits = [(decided_at - created).total_seconds() for created, decided_at, _ in decided if decided_at]
    in_time = sum(1 for _, decided_at, deadline in decided if decided_at and decided_at <= deadline)
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
        "time_to_decision_s": {"p50": percentile(waits, 0.5), "p90": percentile(waits, 0.9), "decided": len(waits)},
        "decided_while_waiting": _share(in_time, len(waits)),
        "deadline_outcomes": dict(sorted(outcomes.items())),
        "backlog": {"open": backlog, "oldest_waiting_s": _age(now, oldest)},
        "upstream": {
            "failures": {str(kind or "unknown"): count for kind, count in sorted(failures.items(), key=str)},
            "failure_rate": _share(volume - answered, volume),
            "latency_ms": {"p50": percentile(latency, 0.5), "p90": percentile(latency, 0.9)},
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
