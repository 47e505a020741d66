"""Stored calibrators, the labelled exchanges they are fitted on, and the fit `hitl calibrate` runs.

Labels come from decided reviews: approve = 1 (releasing the answer unchanged would have been fine),
edit or override = 0. A held review weighs 1; an audit review of a released answer weighs 1 / the rate
it was sampled at, so the few audited answers stand for all the released ones they were drawn from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.learning import reports
from gateway.learning.metrics import (
    Calibrator,
    Method,
    Threshold,
    cross_validated,
    features,
    fit,
    signal_values,
    threshold_for_escaped_error,
    threshold_for_review_rate,
)
from gateway.models import Action, Calibration, Decision, Exchange, Review, ReviewKind
from gateway.proxy.policy import Policy, PolicyError

LABEL_OF = {Action.APPROVE: 1, Action.EDIT: 0, Action.OVERRIDE: 0}


@dataclass
class Labels:
    """Labelled exchanges: the uncalibrated confidence, the signals, the label and its weight."""

    raw: list[float | None] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    audited: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def usable(self, method: str) -> Labels:
        """The rows a method can learn from: isotonic needs the uncalibrated confidence."""
        keep = [i for i, raw in enumerate(self.raw) if method == "logistic" or raw is not None]
        return Labels(
            raw=[self.raw[i] for i in keep],
            rows=[self.rows[i] for i in keep],
            labels=[self.labels[i] for i in keep],
            weights=[self.weights[i] for i in keep],
            audited=[self.audited[i] for i in keep],
        )

    def inputs(self, method: str) -> list[float] | list[list[float]]:
        if method == "isotonic":
            return [float(raw) for raw in self.raw if raw is not None]
        return self.rows


def raw_confidence(exchange: Exchange) -> float | None:
    """The confidence before calibration (exchanges scored by the default formula have no other)."""
    if "raw_confidence" in exchange.signals:
        return exchange.signals["raw_confidence"]
    return exchange.confidence if exchange.calibrator == "default" else None


async def load_labels(session: AsyncSession) -> Labels:
    query = (
        select(Review, Exchange, Decision)
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .join(Decision, col(Decision.review_id) == col(Review.id))
        .where(Review.status == "decided", col(Decision.action).in_(list(LABEL_OF)))
        .order_by(col(Review.created_at), col(Decision.id))
    )
    final: dict[str, tuple[Review, Exchange, Decision]] = {}
    for review, exchange, decision in (await session.exec(query)).all():
        final[review.id] = (review, exchange, decision)  # the last labelling decision of a review counts
    found = Labels()
    for review, exchange, decision in final.values():
        signals = exchange.signals
        values = signal_values(signals)
        if raw_confidence(exchange) is None and all(value is None for value in values.values()):
            continue  # nothing was scored: nothing to learn a confidence from
        audited = review.kind == ReviewKind.AUDIT
        found.raw.append(raw_confidence(exchange))
        found.rows.append(features(values))
        found.labels.append(LABEL_OF[Action(decision.action)])
        found.weights.append(1.0 / review.audit_rate if audited and review.audit_rate else 1.0)
        found.audited.append(audited)
    return found


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
    return Active(Calibrator(row.method, row.params), row.version)  # type: ignore[arg-type]


class NotEnoughLabels(ValueError):
    """Too few labels to fit a calibrator that means anything."""


@dataclass(frozen=True)
class Fitted:
    """A calibrator fitted on every label, with the figures that judge it and where thresholds would go."""

    calibrator: Calibrator
    labels: Labels
    before: reports.Figures  # the uncalibrated confidence (isotonic) or the default formula's
    after: reports.Figures  # held-out: each label scored by a fit that did not see it
    by_review_rate: Threshold
    by_escaped_error: Threshold

    def metrics(self) -> dict[str, Any]:
        return {
            "labels": len(self.labels),
            "approved": sum(self.labels.labels),
            "changed": len(self.labels) - sum(self.labels.labels),
            "audited": sum(self.labels.audited),
            "before": asdict(self.before),
            "after_cross_validated": asdict(self.after),
            "by_review_rate": asdict(self.by_review_rate),
            "by_escaped_error": asdict(self.by_escaped_error),
        }


def fit_labels(
    found: Labels, method: Method, min_labels: int, target_review_rate: float, target_escaped_error: float
) -> Fitted:
    usable = found.usable(method)
    approved = sum(usable.labels)
    changed = len(usable) - approved
    if len(usable) < min_labels or min(approved, changed) < 2:
        raise NotEnoughLabels(
            f"only {len(usable)} labelled exchanges ({approved} approved, {changed} edited or overridden);"
            f" calibration needs at least {min_labels} with at least 2 of each kind."
            " Decide more reviews (the audit queue labels released answers), or lower --min-labels."
        )
    inputs = usable.inputs(method)
    calibrator = fit(inputs, usable.labels, usable.weights, method)
    held_out = cross_validated(inputs, usable.labels, usable.weights, method).tolist()
    scored = [i for i, raw in enumerate(usable.raw) if raw is not None]
    before = reports.figures(
        [float(usable.raw[i]) for i in scored],  # type: ignore[arg-type]
        [usable.labels[i] for i in scored],
        [usable.weights[i] for i in scored],
    )
    calibrated = calibrator.predict(inputs).tolist()
    return Fitted(
        calibrator=calibrator,
        labels=usable,
        before=before,
        after=reports.figures(held_out, usable.labels, usable.weights),
        by_review_rate=threshold_for_review_rate(calibrated, usable.labels, target_review_rate, usable.weights),
        by_escaped_error=threshold_for_escaped_error(calibrated, usable.labels, target_escaped_error, usable.weights),
    )
