"""The figures that judge a confidence against labels (approve = 1, edit or override = 0), and where a
release threshold would go. Pure functions of arrays; weights let audit labels of released answers stand
for all the released answers they were drawn from.

- `auroc`, `ece` (equal-width bins), `brier`, `prediction_rejection_ratio`, `reliability`.
- `threshold_for_review_rate` and `threshold_for_escaped_error`: where to put the release threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from gateway.scoring.calibrator import FloatArray


def _arrays(scores: Sequence[float], labels: Sequence[int], weights: Sequence[float] | None) -> tuple[FloatArray, ...]:
    p = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=float)
    if not (len(p) == len(y) == len(w)):
        raise ValueError("scores, labels and weights must have the same length")
    return p, y, w


def auroc(scores: Sequence[float], labels: Sequence[int], weights: Sequence[float] | None = None) -> float:
    from sklearn.metrics import roc_auc_score  # scikit-learn is for fitting and reports, not the request path

    p, y, w = _arrays(scores, labels, weights)
    if len(set(y.tolist())) < 2:
        return math.nan
    return float(roc_auc_score(y, p, sample_weight=w))


def ece(
    scores: Sequence[float], labels: Sequence[int], weights: Sequence[float] | None = None, bins: int = 10
) -> float:
    """Expected calibration error over `bins` equal-width bins of [0, 1], weighted by each bin's mass."""
    p, y, w = _arrays(scores, labels, weights)
    if w.sum() == 0:
        return math.nan
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        mass = w[mask].sum()
        if mass > 0:
            total += mass * abs(np.average(p[mask], weights=w[mask]) - np.average(y[mask], weights=w[mask]))
    return float(total / w.sum())


def brier(scores: Sequence[float], labels: Sequence[int], weights: Sequence[float] | None = None) -> float:
    from sklearn.metrics import brier_score_loss

    p, y, w = _arrays(scores, labels, weights)
    if len(p) == 0:
        return math.nan
    return float(brier_score_loss(y, p, sample_weight=w))


def reliability(scores: Sequence[float], labels: Sequence[int], bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean confidence, share labelled 1, count) per non-empty bin, for a reliability diagram."""
    p, y, _ = _arrays(scores, labels, None)
    index = np.minimum((p * bins).astype(int), bins - 1)
    return [
        (float(p[index == b].mean()), float(y[index == b].mean()), int((index == b).sum()))
        for b in range(bins)
        if (index == b).any()
    ]


def prediction_rejection_ratio(scores: Sequence[float], labels: Sequence[int]) -> float:
    """How much of the oracle's gain the confidence achieves when rejecting (holding) low-confidence answers.

    The area between the random and the confidence-ordered rejection curves of the error rate, divided
    by the area between random and oracle. 1 = perfect ordering, 0 = no better than chance.
    """
    p, y, _ = _arrays(scores, labels, None)
    n = len(y)
    errors = 1.0 - y
    if n == 0 or errors.sum() in (0, n):
        return math.nan

    def area(order: np.ndarray) -> float:
        # Error rate among the answers kept after rejecting the k least confident, k = 0..n-1.
        kept_errors = np.cumsum(errors[order][::-1])[::-1]
        kept = np.arange(n, 0, -1)
        return float(np.mean(kept_errors / kept))

    by_confidence = area(np.argsort(p, kind="stable"))
    oracle = area(np.argsort(-errors, kind="stable"))
    random = float(errors.mean())
    return (random - by_confidence) / (random - oracle)


@dataclass(frozen=True)
class Threshold:
    threshold: float
    review_rate: float
    escaped_error_rate: float


def _outcome(p: FloatArray, y: FloatArray, w: FloatArray, threshold: float) -> Threshold:
    released = p >= threshold
    review_rate = float(w[~released].sum() / w.sum())
    escaped = float(np.average(1.0 - y[released], weights=w[released])) if w[released].sum() > 0 else 0.0
    return Threshold(threshold=threshold, review_rate=review_rate, escaped_error_rate=escaped)


def sweep(scores: Sequence[float], labels: Sequence[int], weights: Sequence[float] | None = None) -> list[Threshold]:
    """Review rate and escaped-error rate for every distinct threshold (release when confidence >= t)."""
    p, y, w = _arrays(scores, labels, weights)
    candidates = sorted({0.0, *p.tolist(), math.nextafter(1.0, 2.0)})
    return [_outcome(p, y, w, t) for t in candidates]


def threshold_for_review_rate(
    scores: Sequence[float], labels: Sequence[int], target: float, weights: Sequence[float] | None = None
) -> Threshold:
    """The threshold whose review rate is closest to `target` (ties: the lower review rate)."""
    return min(sweep(scores, labels, weights), key=lambda t: (abs(t.review_rate - target), t.review_rate))


def threshold_for_escaped_error(
    scores: Sequence[float], labels: Sequence[int], target: float, weights: Sequence[float] | None = None
) -> Threshold:
    """The lowest threshold (fewest reviews) whose escaped-error rate is at most `target`."""
    fitting = [t for t in sweep(scores, labels, weights) if t.escaped_error_rate <= target]
    return min(fitting, key=lambda t: t.threshold)


@dataclass(frozen=True)
class Bound:
    """The escaped-error rate at a threshold, with the upper end of its confidence interval."""

    threshold: float
    escaped_error_rate: float
    upper: float  # upper end of the Wilson interval, on the labels' effective sample size
    released: float  # effective number of labelled answers released at this threshold
    review_rate: float


def escaped_error_bound(
    scores: Sequence[float], labels: Sequence[int], threshold: float, weights: Sequence[float] | None = None,
    confidence: float = 0.95,
) -> Bound:  # fmt: skip
    """The escaped-error rate among answers released at `threshold` and the upper end of its `confidence`
    Wilson interval. Weighted labels (audits at 1 / their sampling rate) count by Kish's effective sample
    size, (sum w)^2 / sum w^2, so fifty copies of one audit do not pass for fifty answers."""
    p, y, w = _arrays(scores, labels, weights)
    released = p >= threshold
    review_rate = float(w[~released].sum() / w.sum()) if w.sum() > 0 else 1.0
    wr = w[released]
    if wr.sum() <= 0:
        return Bound(threshold, 0.0, 1.0, 0.0, review_rate)  # nothing released: nothing known
    rate = float(np.average(1.0 - y[released], weights=wr))
    n = float(wr.sum() ** 2 / (wr**2).sum())
    return Bound(threshold, rate, wilson(rate, n, confidence)[1], n, review_rate)


def wilson(rate: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `rate` observed on `n` (effective) trials."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def threshold_within_bound(
    scores: Sequence[float], labels: Sequence[int], target: float, weights: Sequence[float] | None = None,
    confidence: float = 0.95,
) -> Bound | None:  # fmt: skip
    """The lowest release threshold whose escaped-error rate stays within `target` at the upper end of its
    `confidence` interval, found as a fixed sequence: from the highest threshold that releases enough answers
    for the bound to be able to pass (zero errors among them would), down through every lower one while each
    passes, stopping at the first that fails. A threshold below a failure is never taken, however lucky its
    own labels, so scanning many thresholds does not buy a false pass. None when the first already fails."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    needed = z * z * (1 - target) / target  # the fewest released answers whose bound can meet the target
    chosen: Bound | None = None
    for threshold in sorted(set(np.asarray(scores, dtype=float).tolist()), reverse=True):
        bound = escaped_error_bound(scores, labels, threshold, weights, confidence)
        if bound.released < needed:
            continue  # too few released yet for any bound to pass: the sequence has not begun
        if bound.upper > target:
            break
        chosen = bound
    return chosen
