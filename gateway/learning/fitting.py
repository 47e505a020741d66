"""Fitting calibrators: scikit-learn's isotonic or logistic regression on labelled exchanges, held-out
figures by cross-validation, and the fit `hitl calibrate` runs (with its recommended thresholds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gateway.learning import drift, reports
from gateway.learning.labels import Labels
from gateway.learning.metrics import Threshold, threshold_for_escaped_error, threshold_for_review_rate
from gateway.scoring.calibrator import SIGNALS, Calibrator, FloatArray, Method


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
    held_out: list[float]  # each label's calibrated confidence from a fit that did not see it

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
            # What it was fitted on, per band of its confidences, for the Insights page's drift.
            "bands_at_fit": drift.at_fit(self.held_out, self.labels),
        }


def shortfall(usable: Labels, min_labels: int) -> str | None:
    """Why these labels are too few to fit on, or None when they are enough."""
    approved = sum(usable.labels)
    changed = len(usable) - approved
    if len(usable) < min_labels or min(approved, changed) < 2:
        return f"only {len(usable)} labelled exchanges ({approved} approved, {changed} edited or overridden)"
    return None


def fit_labels(
    found: Labels, method: Method, min_labels: int, target_review_rate: float, target_escaped_error: float
) -> Fitted:
    usable = found.usable(method)
    if (short := shortfall(usable, min_labels)) is not None:
        raise NotEnoughLabels(
            f"{short}; calibration needs at least {min_labels} with at least 2 of each kind."
            " Decide more reviews (the audit queue labels released answers), or lower --min-labels."
        )
    inputs = usable.inputs(method)
    calibrator = fit(inputs, usable.labels, usable.weights, method)
    held_out = cross_validated(inputs, usable.labels, usable.weights, method).tolist()
    # Judged on the labels that have an uncalibrated confidence (logistic may also learn from unscored ones).
    rows = zip(usable.raw, usable.labels, usable.weights, strict=True)
    kept = [(raw, label, weight) for raw, label, weight in rows if raw is not None]
    before = reports.figures([raw for raw, _, _ in kept], [label for _, label, _ in kept], [w for _, _, w in kept])
    calibrated = calibrator.predict(inputs).tolist()
    return Fitted(
        calibrator=calibrator,
        labels=usable,
        before=before,
        after=reports.figures(held_out, usable.labels, usable.weights),
        by_review_rate=threshold_for_review_rate(calibrated, usable.labels, target_review_rate, usable.weights),
        by_escaped_error=threshold_for_escaped_error(calibrated, usable.labels, target_escaped_error, usable.weights),
        held_out=held_out,
    )


@dataclass(frozen=True)
class Fits:
    """The pooled fit, one fit per calibration group with labels enough of its own, and why each other
    group takes the pooled calibrator."""

    pooled: Fitted
    groups: dict[str, Fitted]
    pooled_only: dict[str, str]


def fit_groups(
    found: Labels, method: Method, min_labels: int, target_review_rate: float, target_escaped_error: float
) -> Fits:
    """Raises `NotEnoughLabels` when even the pooled labels are too few."""
    pooled = fit_labels(found, method, min_labels, target_review_rate, target_escaped_error)
    groups: dict[str, Fitted] = {}
    pooled_only: dict[str, str] = {}
    usable = found.usable(method)
    for group in sorted(set(usable.groups)):
        own = usable.of_group(group)
        if len(own) == len(usable):
            pooled_only[group] = "its labels are all the pooled ones"
        elif (short := shortfall(own, min_labels)) is not None:
            pooled_only[group] = f"{short}, below --min-labels {min_labels} or 2 of each kind"
        else:
            groups[group] = fit_labels(own, method, min_labels, target_review_rate, target_escaped_error)
    return Fits(pooled, groups, pooled_only)
