"""Whether the confidence still means what it meant at calibration time. A calibrated confidence is a promise:
of the answers scored 0.9, nine in ten are right. Per band of 0.1, this compares

- what the period's decided reviews say (approve = right; an audit weighs 1 / its sampling rate) with what the
  band promises (its answers' mean confidence), and warns when the promise falls outside the 95% Wilson interval
  of what was observed (with at least `MIN_LABELS` effective labels in the band);
- the period's confidence histogram with the previous period's of the same length, and warns when they part by
  more than `MAX_SHIFT` (total variation distance: the share of answers that would have to move band).
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.learning import simulation
from gateway.learning.metrics import wilson
from gateway.learning.simulation import History

BANDS = [round(step / 10, 1) for step in range(10)]
MIN_LABELS = 10.0
MAX_SHIFT = 0.2


def _band(confidence: float) -> float:
    return BANDS[min(int(confidence * 10), 9)]


def _histogram(confidences: list[float]) -> dict[float, float]:
    counts = {band: 0 for band in BANDS}
    for confidence in confidences:
        counts[_band(confidence)] += 1
    total = len(confidences)
    return {band: count / total if total else 0.0 for band, count in counts.items()}


def drift(now: History, before: History) -> dict[str, Any]:
    shares, earlier = _histogram(now.confidences), _histogram(before.confidences)
    bands: list[dict[str, Any]] = []
    warnings: list[str] = []
    for band in BANDS:
        labelled = [
            (confidence, label, weight) for confidence, label, weight in now.labelled if _band(confidence) == band
        ]
        weights = [weight for _, _, weight in labelled]
        n = sum(weights) ** 2 / sum(weight * weight for weight in weights) if weights else 0.0
        observed = sum(label * weight for _, label, weight in labelled) / sum(weights) if weights else None
        promised = statistics.fmean(confidence for confidence, _, _ in labelled) if labelled else None
        low, high = wilson(observed, n) if observed is not None and n > 0 else (None, None)
        row = {"band": f"{band:.1f}-{band + 0.1:.1f}", "share": shares[band], "share_before": earlier[band],
               "labels": round(n, 1), "promised": promised, "observed": observed, "observed_low": low,
               "observed_high": high}  # fmt: skip
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
    if now.confidences and before.confidences and shift > MAX_SHIFT:
        warnings.append(
            f"The answers' confidences have shifted: {shift:.0%} of them would have to move band to look like the"
            " previous period's. The model, the traffic or the prompts changed; check the review rate and the audits."
        )
    return {"bands": bands, "shift": shift if now.confidences and before.confidences else None, "warnings": warnings}


async def of_period(
    session: AsyncSession, since: datetime, until: datetime, model: str | None, tier: str | None
) -> dict[str, Any]:
    """`drift` of the exchanges of `[since, until)` against the period of the same length before it."""
    now = await simulation.load(session, since, until, model, tier)
    before = await simulation.load(session, since - (until - since), since, model, tier)
    return drift(now, before)
