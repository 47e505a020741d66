"""Fitting calibrators, on small hand-checked data: isotonic and logistic, serialization, held-out figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gateway.learning import fitting, metrics
from gateway.scoring.calibrator import SIGNALS, Calibrator, features


def test_isotonic_fit_is_monotone_and_serializes() -> None:
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 1, 2000)
    labels = (rng.uniform(0, 1, 2000) < raw**2).astype(int)  # overconfident raw scores
    calibrator = fitting.fit(raw.tolist(), labels.tolist(), method="isotonic")
    calibrated = calibrator.predict(raw)
    assert metrics.ece(calibrated, labels) < metrics.ece(raw, labels)
    grid = calibrator.predict(np.linspace(0, 1, 50))
    assert np.all(np.diff(grid) >= 0)
    restored = Calibrator(**json.loads(json.dumps(calibrator.as_dict())))
    assert np.allclose(restored.predict(raw), calibrated)


def test_logistic_fit_over_signals_with_missing_values() -> None:
    rows = [features({"mean_logprob": -0.05, "min_prob": 0.9, "mean_entropy": 0.1, "p_yes": None})] * 20
    rows += [features({"mean_logprob": -2.0, "min_prob": 0.05, "mean_entropy": 0.8, "p_yes": 0.2})] * 20
    labels = [1] * 20 + [0] * 20
    calibrator = fitting.fit(rows, labels, method="logistic")
    predicted = calibrator.predict(rows)
    assert predicted[:20].min() > 0.8 and predicted[20:].max() < 0.2
    assert calibrator.params["features"] == list(SIGNALS)


def test_fit_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fitting.fit([0.1, 0.2], [1, 1])


def test_isotonic_plateaus_are_ordered_by_the_raw_score() -> None:
    # A signal pointing the wrong way: isotonic regression pools it all into one plateau at the base rate.
    raw = [0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.4, 0.6]
    labels = [1, 0, 0, 0, 0, 1, 0, 0]
    calibrator = fitting.fit(raw, labels, method="isotonic")
    calibrated = calibrator.predict(raw)
    assert np.allclose(calibrated, 0.25, atol=1e-5)  # calibration is untouched
    assert list(np.argsort(calibrated)) == list(np.argsort(raw))  # but a threshold can still split it
    assert metrics.threshold_for_review_rate(calibrated, labels, 0.5).review_rate == pytest.approx(0.5)


def test_cross_validated_predictions_come_from_fits_that_did_not_see_the_label() -> None:
    rng = np.random.default_rng(3)
    raw = rng.uniform(0, 1, 400)
    labels = (rng.uniform(0, 1, 400) < raw).astype(int)
    held_out = fitting.cross_validated(raw.tolist(), labels.tolist(), method="isotonic")
    in_sample = fitting.fit(raw.tolist(), labels.tolist(), method="isotonic").predict(raw)
    assert held_out.shape == (400,) and not np.allclose(held_out, in_sample)
    # In-sample isotonic looks perfectly calibrated; held out, the same fit is honest about its error.
    assert metrics.ece(in_sample, labels) < 1e-3 < metrics.ece(held_out, labels) < 0.1
