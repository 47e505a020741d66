"""What moving the release band would have cost, read off the stored history before anyone changes it.

Every scored exchange of the period counts once at the confidence the policy saw. At a release threshold `t`,
those below it would have been held: the review rate, and the agent hours they take at the measured time per
decision (from an agent's claim of a review to that agent's decision on it, the median). Those at or above it
would have been released: their error rate is read from the labels among them (approve = right, edit or override
= wrong; an audit weighs 1 / its sampling rate, as `labels.py` weighs it), with the upper end of its Wilson
interval, and the errors it implies among everything released.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.learning.labels import LABEL_OF
from gateway.learning.metrics import escaped_error_bound
from gateway.models import Action, Decision, Exchange, Review, ReviewKind, ReviewStatus, Route
from gateway.policy import DEFAULT_POLICY, Policy, rethresholded
from gateway.review import timing


@dataclass
class History:
    """The period's scored exchanges: each confidence, and the label and weight of those a review decided."""

    confidences: list[float] = field(default_factory=list)
    labelled: list[tuple[float, int, float]] = field(default_factory=list)  # (confidence, label, weight)
    seconds_per_decision: float | None = None
    decisions_timed: int = 0


@dataclass(frozen=True)
class Simulation:
    release_min: float
    exchanges: int
    review_rate: float | None
    held: int
    released: int
    labels_released: int  # the labelled answers the threshold releases, on which the error rate stands
    escaped_error_rate: float | None
    escaped_error_upper: float | None  # the upper end of its 95% Wilson interval
    expected_escaped_errors: float | None
    agent_hours: float | None

    def described(self) -> dict[str, Any]:
        return dict(self.__dict__)


def scored(since: datetime, until: datetime, model: str | None = None, tier: str | None = None) -> list[Any]:
    """The scored exchanges that arrived in `[since, until)`, of one model or tier when given, as conditions on
    `Exchange`: never a copy made for a gold item or a second review (no traffic)."""
    within = [
        col(Exchange.created_at) >= since,
        col(Exchange.created_at) < until,
        col(Exchange.confidence).is_not(None),
        col(Exchange.copy_of).is_(None),
    ]
    if model is not None:
        within.append(col(Exchange.model) == model)
    if tier is not None:
        within.append(col(Exchange.tier) == tier)
    return within


async def load(
    session: AsyncSession, since: datetime, until: datetime, model: str | None = None, tier: str | None = None
) -> History:
    """The history of exchanges that arrived in `[since, until)`, of one model or tier when given."""
    within = scored(since, until, model, tier)
    found = History()
    confidences = (await session.exec(select(Exchange.confidence).where(*within))).all()
    found.confidences = [float(confidence) for confidence in confidences if confidence is not None]
    decided = (
        sa_select(
            col(Review.id), col(Review.kind), col(Review.audit_rate), col(Exchange.confidence), col(Decision.action)
        )
        .select_from(Exchange)
        .join(Review, col(Review.exchange_id) == col(Exchange.id))
        .join(Decision, col(Decision.review_id) == col(Review.id))
        .where(col(Review.status) == ReviewStatus.DECIDED, col(Decision.action).in_(list(LABEL_OF)), *within)
        .order_by(col(Decision.id))
    )
    last: dict[str, tuple[float, int, float]] = {}  # the last labelling decision of a review counts
    connection = await session.connection()  # a Core statement of five columns, past sqlmodel's overloads
    for review_id, kind, rate, confidence, action in (await connection.execute(decided)).all():
        weight = 1.0 / rate if kind == ReviewKind.AUDIT and rate else 1.0
        last[review_id] = (float(confidence or 0.0), LABEL_OF[Action(action)], weight)
    found.labelled = list(last.values())
    found.seconds_per_decision, found.decisions_timed = await timing.time_per_decision(session, within)
    return found


def simulate(history: History, release_min: float) -> Simulation:
    held = sum(1 for confidence in history.confidences if confidence < release_min)
    total = len(history.confidences)
    released = total - held
    labelled_released = [row for row in history.labelled if row[0] >= release_min]
    rate = upper = expected = None
    if history.labelled and labelled_released:
        scores, labels, weights = zip(*history.labelled, strict=True)
        bound = escaped_error_bound(list(scores), list(labels), release_min, list(weights))
        rate, upper, expected = bound.escaped_error_rate, bound.upper, bound.escaped_error_rate * released
    per_decision = history.seconds_per_decision
    return Simulation(
        release_min=release_min,
        exchanges=total,
        review_rate=held / total if total else None,
        held=held,
        released=released,
        labels_released=len(labelled_released),
        escaped_error_rate=rate,
        escaped_error_upper=upper,
        expected_escaped_errors=expected,
        agent_hours=held * per_decision / 3600 if per_decision is not None else None,
    )


def current_release(policy: Policy, group: str | None) -> float | None:
    """Where the policy's bands (a calibration group's own, when it has them) start releasing; None: never."""
    return next((band.min for band in policy.bands_for(group) if band.route == Route.RELEASE), None)


def compared(history: History, policy: Policy, release_min: float, group: str | None) -> dict[str, Any]:
    """The policy's own threshold and the proposed one, simulated on the same history."""
    now = current_release(policy, group)
    return {
        "seconds_per_decision": history.seconds_per_decision,
        "decisions_timed": history.decisions_timed,
        "current": simulate(history, now).described() if now is not None else None,
        "proposed": simulate(history, release_min).described(),
    }


def rows(found: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """A comparison as (figure, current, proposed) rows, for a CSV."""
    current, proposed = found["current"] or {}, found["proposed"]
    shared = [("seconds_per_decision", found["seconds_per_decision"]), ("decisions_timed", found["decisions_timed"])]
    return [
        *((name, value, value) for name, value in shared),
        *((name, current.get(name), proposed[name]) for name in proposed),
    ]


def policy_text(
    policy: Policy, source: Path | None, release_min: float, group: str | None, history: History, period: str, by: str
) -> str:
    """The policy file with its release band moved, as `hitl simulate --write-policy` and the Insights page write
    it: the same source file, a new version, a header saying who simulated what; checked to load."""
    path = source or DEFAULT_POLICY
    note = (
        f"Written by {by} from {path} ({policy.version}): release at >= {release_min:g}"
        + (f" for {group}" if group else "")
        + f", simulated on {len(history.confidences)} exchanges {period}."
    )
    return rethresholded(policy, path.read_text(encoding="utf-8"), release_min, note, group)
