"""The labelled exchanges calibrators are fitted on.

Labels come from decided reviews: approve = 1 (releasing the answer unchanged would have been fine),
edit or override = 0. A held review weighs 1; an audit review of a released answer weighs 1 / the rate
it was sampled at, so the few audited answers stand for all the released ones they were drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import Action, Decision, Exchange, Review, ReviewKind, ReviewStatus
from gateway.scoring.calibrator import calibration_group, features, signal_values

LABEL_OF = {Action.APPROVE: 1, Action.EDIT: 0, Action.OVERRIDE: 0}


@dataclass
class Labels:
    """Labelled exchanges: the uncalibrated confidence, the signals, the label and its weight."""

    raw: list[float | None] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    audited: list[bool] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # each label's calibration group

    def __len__(self) -> int:
        return len(self.labels)

    def usable(self, method: str) -> Labels:
        """The rows a method can learn from: isotonic needs the uncalibrated confidence."""
        return self._kept([i for i, raw in enumerate(self.raw) if method == "logistic" or raw is not None])

    def of_group(self, group: str) -> Labels:
        """The labels of one calibration group."""
        return self._kept([i for i, found in enumerate(self.groups) if found == group])

    def _kept(self, keep: list[int]) -> Labels:
        return Labels(
            raw=[self.raw[i] for i in keep],
            rows=[self.rows[i] for i in keep],
            labels=[self.labels[i] for i in keep],
            weights=[self.weights[i] for i in keep],
            audited=[self.audited[i] for i in keep],
            groups=[self.groups[i] for i in keep],
        )

    def inputs(self, method: str) -> list[float] | list[list[float]]:
        if method == "isotonic":
            return [float(raw) for raw in self.raw if raw is not None]
        return self.rows


def raw_confidence(exchange: Exchange) -> float | None:
    """The confidence before calibration (exchanges scored by the default formula have no other)."""
    if "raw_confidence" in exchange.signals:
        raw = exchange.signals["raw_confidence"]
        return None if raw is None else float(raw)
    return exchange.confidence if exchange.calibrator == "default" else None


async def load_labels(session: AsyncSession) -> Labels:
    query = (
        select(Review, Exchange, Decision)
        .join(Exchange, col(Exchange.id) == col(Review.exchange_id))
        .join(Decision, col(Decision.review_id) == col(Review.id))
        .where(col(Review.status) == ReviewStatus.DECIDED, col(Decision.action).in_(list(LABEL_OF)))
        .where(col(Review.shadow).is_(None))  # a gold item's or a second review's decision is about the reviewer
        .order_by(col(Review.created_at), col(Decision.id))
    )
    final: dict[str, tuple[Review, Exchange, Decision]] = {}
    for review, exchange, decision in (await session.exec(query)).all():
        final[review.id] = (review, exchange, decision)  # the last labelling decision of a review counts
    found = Labels()
    for review, exchange, decision in final.values():
        signals = exchange.signals
        if signals.get("reused"):
            continue  # its confidence was the fresh candidate's, not the reused answer's that the label is about
        values = signal_values(signals)
        if raw_confidence(exchange) is None and all(value is None for value in values.values()):
            continue  # nothing was scored: nothing to learn a confidence from
        audited = review.kind == ReviewKind.AUDIT
        found.raw.append(raw_confidence(exchange))
        found.rows.append(features(values))
        found.labels.append(LABEL_OF[Action(decision.action)])
        found.weights.append(1.0 / review.audit_rate if audited and review.audit_rate else 1.0)
        found.audited.append(audited)
        found.groups.append(signals.get("calibration_group") or calibration_group(exchange.model, signals))
    return found
