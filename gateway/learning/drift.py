"""Whether the confidence still means what it meant at calibration time. A calibrated confidence is a promise:
of the answers scored 0.9, nine in ten are right. Per band of 0.1, this compares

- what the period's decided reviews say (approve = right; an audit weighs 1 / its sampling rate) with what the
  band promises (its answers' mean confidence), and warns when the promise falls outside the 95% Wilson interval
  of what was observed (with at least `MIN_LABELS` effective labels in the band);
- the period's confidence histogram with the previous period's of the same length, and with the one the period's
  calibrator was fitted on (`at_fit`, stored with it), and warns when either parts by more than `MAX_SHIFT` (total
  variation distance: the share of answers that would have to move band).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.learning import simulation
from gateway.learning.labels import LABEL_OF, Labels
from gateway.learning.metrics import wilson
from gateway.models import Action, Calibration, Decision, Exchange, Review, ReviewKind, ReviewStatus
from gateway.review import periods

BANDS = [round(step / 10, 1) for step in range(10)]
MIN_LABELS = 10.0
MAX_SHIFT = 0.2


@dataclass(frozen=True)
class Labelled:
    """A band's decided reviews, summed in the database: their count, weights (an audit weighs 1 / its sampling
    rate), squared weights, weights of those approved, and confidences."""

    count: int
    weight: float
    weight_squared: float
    right: float
    confidence: float


def _band(session: AsyncSession) -> Any:
    """An exchange's band of 0.1 as an index 0-9, as the database computes it (1.0 falls in the top band)."""
    tenths = col(Exchange.confidence) * 10
    if session.get_bind().dialect.name == "postgresql":
        tenths = func.floor(tenths)
    return case((col(Exchange.confidence) >= 0.9, 9), else_=cast(tenths, Integer))


async def histogram(session: AsyncSession, within: list[Any]) -> dict[int, int]:
    """Scored exchanges per band."""
    band = _band(session)
    counted = select(band, func.count()).where(*within).group_by(band)
    return {int(index): count for index, count in (await session.exec(counted)).all()}


async def labelled(session: AsyncSession, within: list[Any]) -> dict[int, Labelled]:
    """The decided reviews' labels per band (a decided review has one labelling decision: the one that closed it)."""
    band = _band(session)
    audited = and_(col(Review.kind) == ReviewKind.AUDIT, col(Review.audit_rate) > 0)
    weight = case((audited, 1.0 / col(Review.audit_rate)), else_=1.0)
    right = case((col(Decision.action) == Action.APPROVE, weight), else_=0.0)
    summed = (
        sa_select(
            band,
            func.count(),
            func.sum(weight),
            func.sum(weight * weight),
            func.sum(right),
            func.sum(col(Exchange.confidence)),
        )  # fmt: skip
        .select_from(Exchange)
        .join(Review, col(Review.exchange_id) == col(Exchange.id))
        .join(Decision, col(Decision.review_id) == col(Review.id))
        .where(col(Review.status) == ReviewStatus.DECIDED, col(Decision.action).in_(list(LABEL_OF)), *within)
        .group_by(band)
    )
    connection = await session.connection()  # a Core statement of six columns, past sqlmodel's overloads
    return {int(index): Labelled(count, float(total), float(squared), float(good), float(confidence))
            for index, count, total, squared, good, confidence in (await connection.execute(summed)).all()}  # fmt: skip


def at_fit(confidences: list[float], labels: Labels) -> list[dict[str, float | None]]:
    """What a calibrator was fitted on, per band of 0.1 of its (held-out) confidences: the share of the traffic the
    labels stand for (each weighted as it weighs in the fit: an audit 1 / its sampling rate) and the share right."""
    weight = [0.0] * len(BANDS)
    right = [0.0] * len(BANDS)
    for confidence, label, weighs in zip(confidences, labels.labels, labels.weights, strict=True):
        index = min(int(confidence * 10), 9)
        weight[index] += weighs
        right[index] += weighs * label
    total = sum(weight)
    return [{"share": part / total if total else 0.0, "right": right[i] / part if part else None}
            for i, part in enumerate(weight)]  # fmt: skip


def _shares(counts: dict[int, int]) -> dict[float, float]:
    total = sum(counts.values())
    return {band: counts.get(index, 0) / total if total else 0.0 for index, band in enumerate(BANDS)}


def drift(
    now: dict[int, int],
    before: dict[int, int],
    labels: dict[int, Labelled],
    fit: list[dict[str, Any]] | None = None,
    calibrator: str | None = None,
) -> dict[str, Any]:
    """Per band, the promise against what the labels found, and the histogram against the previous period's and
    against the one `calibrator` was fitted on (`fit`, from `at_fit`); warnings."""
    shares, earlier = _shares(now), _shares(before)
    bands: list[dict[str, Any]] = []
    warnings: list[str] = []
    for index, band in enumerate(BANDS):
        found = labels.get(index)
        n = found.weight**2 / found.weight_squared if found and found.weight_squared else 0.0
        observed = found.right / found.weight if found and found.weight else None
        promised = found.confidence / found.count if found and found.count else None
        low, high = wilson(observed, n) if observed is not None and n > 0 else (None, None)
        row = {"band": f"{band:.1f}-{band + 0.1:.1f}", "share": shares[band], "share_before": earlier[band],
               "labels": round(n, 1), "promised": promised, "observed": observed, "observed_low": low,
               "observed_high": high, "share_at_fit": fit[index]["share"] if fit else None,
               "right_at_fit": fit[index]["right"] if fit else None}  # fmt: skip
        bands.append(row)
        if promised is not None and low is not None and high is not None and n >= MIN_LABELS:
            if not low <= promised <= high:
                direction = "less" if observed is not None and observed < promised else "more"
                warnings.append(
                    f"Answers scored {row['band']} were right {observed:.0%} of the time ({n:.0f} labels, 95% interval"
                    f" {low:.0%} to {high:.0%}): {direction} often than their confidence of {promised:.0%} says."
                    " The calibration no longer fits; run `hitl calibrate` (or let `hitl learn` refit it)."
                )
    shift = sum(abs(shares[band] - earlier[band]) for band in BANDS) / 2
    if now and before and shift > MAX_SHIFT:
        warnings.append(
            f"The answers' confidences have shifted: {shift:.0%} of them would have to move band to look like the"
            " previous period's. The model, the traffic or the prompts changed; check the review rate and the audits."
        )
    moved = sum(abs(shares[band] - fit[index]["share"]) for index, band in enumerate(BANDS)) / 2 if fit else None
    if now and moved is not None and moved > MAX_SHIFT:
        warnings.append(
            f"The answers' confidences have moved since {calibrator} was fitted: {moved:.0%} of them would have to"
            " move band to look like what it learned from. Its promise may no longer hold; run `hitl calibrate`."
        )
    return {"bands": bands, "shift": shift if now and before else None, "calibrator": calibrator,
            "shift_from_fit": moved if now else None, "warnings": warnings}  # fmt: skip


async def of_period(
    session: AsyncSession, since: datetime, until: datetime, model: str | None, tier: str | None
) -> dict[str, Any]:
    """`drift` of the exchanges of `[since, until)` against the period of the same length before it, counted and
    summed per band in the database."""
    within = simulation.scored(since, until, model, tier)
    calibrator, fit = await _fitted(session, within)
    now = await histogram(session, within)
    before = await histogram(session, simulation.scored(since - (until - since), since, model, tier))
    reviewed = [periods.reviews_since(since), *within]
    return drift(now, before, await labelled(session, reviewed), fit, calibrator)


async def _fitted(session: AsyncSession, within: list[Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
    """The calibrator that scored most of the period's answers, and what it was fitted on (when it says: one fitted
    before the figures were stored says nothing)."""
    used = func.count().label("used")
    most = select(Exchange.calibrator, used).where(*within).group_by(col(Exchange.calibrator)).order_by(used.desc())
    found = (await session.exec(most.limit(1))).first()
    if found is None or not found[0].startswith("cal-") or not found[0][4:].isdigit():
        return None, None
    row = await session.get(Calibration, int(found[0][4:]))
    fit = (row.metrics or {}).get("bands_at_fit") if row is not None else None
    return (found[0], fit) if isinstance(fit, list) and len(fit) == len(BANDS) else (found[0], None)
