"""Whether the loop works, week by week (weeks start on Monday, UTC): the review rate (held of the answered), the
escaped-error rate estimated from the audit sample (released answers drawn at random and decided by an agent:
an edit or override means the released answer was wrong) with its 95% Wilson interval, and the policy versions
and calibrators that were live. A team lead shows that review gets rarer without errors getting through by
reading the rate fall while the interval stays low.

Weeks are counted in the database (`date_trunc` on PostgreSQL, `date` modifiers on SQLite).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.learning.labels import LABEL_OF
from gateway.learning.metrics import wilson
from gateway.models import Action, Decision, Exchange, Review, ReviewKind, ReviewStatus, Route


@dataclass
class Week:
    start: date
    answered: int = 0
    held: int = 0
    audited: int = 0  # audit reviews decided
    audit_errors: int = 0  # of them, edited or overridden
    policies: set[str] = field(default_factory=set)
    calibrators: set[str] = field(default_factory=set)

    def described(self) -> dict[str, Any]:
        rate = self.audit_errors / self.audited if self.audited else None
        low, high = wilson(rate, self.audited) if rate is not None else (None, None)
        return {
            "week": self.start.isoformat(),
            "answered": self.answered,
            "held": self.held,
            "review_rate": self.held / self.answered if self.answered else None,
            "audited": self.audited,
            "audit_errors": self.audit_errors,
            "escaped_error_rate": rate,
            "escaped_error_low": low,
            "escaped_error_high": high,
            "policies": sorted(self.policies),
            "calibrators": sorted(self.calibrators),
        }


def _week(session: AsyncSession) -> ColumnElement[Any]:
    """The Monday (UTC) of an exchange's arrival, as the database computes it."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("week", func.timezone("UTC", col(Exchange.created_at)))
    return func.date(col(Exchange.created_at), "weekday 0", "-6 days")


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


async def weekly(
    session: AsyncSession, within: list[ColumnElement[bool]], reviewed: tuple[ColumnElement[bool], ...]
) -> list[dict[str, Any]]:
    """Each week of the exchanges `within` takes, oldest first; `reviewed` says what `within` implies of their
    reviews (`review.periods`), so the audits are read from the reviews' index."""
    week = _week(session).label("week")
    weeks: dict[date, Week] = {}

    def of(value: Any) -> Week:
        start = _day(value)
        return weeks.setdefault(start, Week(start))

    routed = select(week, Exchange.route, func.count()).where(*within).group_by(week, Exchange.route)
    for when, route, count in (await session.exec(routed)).all():
        if route != Route.NONE:
            of(when).answered += count
        if route == Route.HOLD:
            of(when).held += count
    scored = col(Exchange.route) != Route.NONE  # a failed call was routed and calibrated by nothing
    live = select(week, Exchange.policy_version, Exchange.calibrator).where(scored, *within).distinct()
    for when, version, calibrator in (await session.exec(live)).all():
        of(when).policies.add(version)
        of(when).calibrators.add(calibrator)
    audits = (
        select(week, Review.id, Decision.action)
        .join(Review, col(Review.exchange_id) == col(Exchange.id))
        .join(Decision, col(Decision.review_id) == col(Review.id))
        .where(col(Review.kind) == ReviewKind.AUDIT, col(Review.status) == ReviewStatus.DECIDED, *reviewed, *within)
        .where(col(Decision.action).in_(list(LABEL_OF)))
        .order_by(col(Decision.id))
    )
    final: dict[str, tuple[Any, str]] = {}  # an audit's last labelling decision counts
    for when, review_id, action in (await session.exec(audits)).all():
        final[review_id] = (when, action)
    for when, action in final.values():
        of(when).audited += 1
        of(when).audit_errors += 1 - LABEL_OF[Action(action)]
    return [weeks[start].described() for start in sorted(weeks)]
