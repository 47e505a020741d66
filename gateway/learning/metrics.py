"""Calibration: from signals to a confidence that means "an agent would release this unchanged".

Labels come from decisions (approve = 1, edit or override = 0). Audit labels on released answers carry
weights (1 / sampling rate) so the released side is not under-counted. Everything here is a pure
function of arrays; the CLI and storage build on it.

- `fit()` returns a `Calibrator`: isotonic regression on the uncalibrated confidence, or logistic
  regression over the raw signals (missing values imputed, with an indicator per signal). Both come
  from scikit-learn and serialize to plain JSON for storage.
- `auroc`, `ece` (equal-width bins), `brier`, `prediction_rejection_ratio`: the figures reports print.
- `threshold_for_review_rate` and `threshold_for_escaped_error`: where to put the release threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Method = Literal["isotonic", "logistic"]
SIGNALS = ("mean_logprob", "min_prob", "mean_entropy", "p_yes", "consistency")
FloatArray = np.ndarray
TIE_BREAK = 1e-6


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


def signal_values(signals: dict[str, Any]) -> dict[str, float | None]:
    """The calibrator's inputs from an exchange's stored signals: the weakest choice's logprob signals
    (the one that decided its confidence), the self-check's P(yes) and the consistency score."""
    choices = [choice for choice in signals.get("choices", []) if choice.get("confidence") is not None]
    weakest = min(choices, key=lambda choice: choice["confidence"]) if choices else {}
    if len(choices) != len(signals.get("choices", [])):
        weakest = {}  # an unscored choice made the whole answer unscored
    values: dict[str, float | None] = {name: weakest.get(name) for name in SIGNALS[:3]}
    values["p_yes"] = (signals.get("selfcheck") or {}).get("p_yes")
    values["consistency"] = (signals.get("consistency") or {}).get("score")
    return values


def features(signals: dict[str, Any]) -> list[float]:
    """The logistic calibrator's inputs: each signal (0 when missing) and a missing indicator."""
    values: list[float] = []
    for name in SIGNALS:
        value = signals.get(name)
        values += [0.0, 1.0] if value is None else [float(value), 0.0]
    return values


@dataclass(frozen=True)
class Calibrator:
    method: Method
    params: dict[str, Any]

    def predict(self, inputs: Sequence[float] | Sequence[Sequence[float]]) -> FloatArray:
        """Calibrated confidence: from uncalibrated confidences (isotonic) or `features()` rows (logistic)."""
        if self.method == "isotonic":
            xs, ys = self.params["x"], self.params["y"]
            x = np.asarray(inputs, dtype=float)
            # Isotonic regression is flat in places; without a tie-break a threshold could only release a
            # whole plateau or none of it. A slope far below any ECE bin orders a plateau by the raw score.
            return np.clip(np.interp(x, xs, ys) + TIE_BREAK * (x - 0.5), 0.0, 1.0)
        rows = np.atleast_2d(np.asarray(inputs, dtype=float))
        logits = rows @ np.asarray(self.params["coef"]) + self.params["intercept"]
        return 1.0 / (1.0 + np.exp(-logits))

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}


def fit(
    inputs: Sequence[float] | Sequence[Sequence[float]],
    labels: Sequence[int],
    weights: Sequence[float] | None = None,
    method: Method = "isotonic",
) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels, dtype=int)
    if len(set(y.tolist())) < 2:
        raise ValueError("calibration needs labels of both classes")
    w = None if weights is None else np.asarray(weights, dtype=float)
    if method == "isotonic":
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(np.asarray(inputs, dtype=float), y, sample_weight=w)
        params = {"x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
        return Calibrator("isotonic", params)
    logistic = LogisticRegression(max_iter=1000)
    logistic.fit(np.asarray(inputs, dtype=float), y, sample_weight=w)
    params = {"coef": logistic.coef_[0].tolist(), "intercept": float(logistic.intercept_[0]), "features": list(SIGNALS)}
    return Calibrator("logistic", params)


def cross_validated(
    inputs: Sequence[float] | Sequence[Sequence[float]],
    labels: Sequence[int],
    weights: Sequence[float] | None = None,
    method: Method = "isotonic",
    folds: int = 5,
    seed: int = 0,
) -> FloatArray:
    """Held-out calibrated confidences: each label's prediction comes from a fit that did not see it."""
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(inputs, dtype=float)
    y = np.asarray(labels, dtype=int)
    w = None if weights is None else np.asarray(weights, dtype=float)
    folds = max(2, min(folds, int(np.bincount(y, minlength=2).min())))
    found = np.zeros(len(y), dtype=float)
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        model = fit(x[train], y[train], None if w is None else w[train], method)
        found[test] = model.predict(x[test])
    return found
