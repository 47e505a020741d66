"""Calibration metrics and fits, on small hand-checked data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gateway.learning import metrics as cal


def test_ece_hand_computed() -> None:
    assert cal.ece([0.1, 0.9], [0, 1]) == pytest.approx(0.1)
    # bin 2: mass 2, mean p 0.2, mean y 0.5 -> 0.6; bin 8: mass 2, |0.8 - 1| -> 0.4; (0.6 + 0.4) / 4
    assert cal.ece([0.2, 0.2, 0.8], [0, 1, 1], weights=[1, 1, 2]) == pytest.approx(0.25)
    assert cal.ece([1.0], [1]) == 0.0  # 1.0 falls in the last bin, not past it


def test_auroc_and_brier() -> None:
    assert cal.auroc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert cal.auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert math.isnan(cal.auroc([0.5, 0.6], [1, 1]))
    assert cal.brier([1.0, 0.0], [1, 0]) == 0.0
    assert cal.brier([0.5, 0.5], [1, 0]) == pytest.approx(0.25)


def test_prediction_rejection_ratio() -> None:
    assert cal.prediction_rejection_ratio([0.9, 0.1, 0.5, 0.4], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert cal.prediction_rejection_ratio([0.1, 0.9, 0.4, 0.5], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert math.isnan(cal.prediction_rejection_ratio([0.1, 0.2], [1, 1]))


def test_thresholds() -> None:
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    labels = [0, 0, 1, 0, 1, 1, 0, 1, 1, 1]
    at_30 = cal.threshold_for_review_rate(scores, labels, target=0.3)
    assert at_30.threshold == 0.4 and at_30.review_rate == pytest.approx(0.3)
    # Released from 0.4 up: 0.4 and 0.7 are wrong out of 7.
    assert at_30.escaped_error_rate == pytest.approx(2 / 7)
    safe = cal.threshold_for_escaped_error(scores, labels, target=0.0)
    assert safe.threshold == 0.8 and safe.review_rate == pytest.approx(0.7)
    assert cal.threshold_for_escaped_error(scores, labels, target=0.2).threshold == 0.5  # 1 wrong of 6


def test_weights_count_audited_answers_more() -> None:
    # One audited release stands for 50 like it: the review rate it implies changes accordingly.
    plain = cal.threshold_for_review_rate([0.2, 0.9], [0, 1], target=0.5)
    weighted = cal.threshold_for_review_rate([0.2, 0.9], [0, 1], target=0.5, weights=[1, 50])
    assert plain.review_rate == pytest.approx(0.5) and weighted.review_rate == pytest.approx(1 / 51)


def test_isotonic_fit_is_monotone_and_serializes() -> None:
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 1, 2000)
    labels = (rng.uniform(0, 1, 2000) < raw**2).astype(int)  # overconfident raw scores
    calibrator = cal.fit(raw.tolist(), labels.tolist(), method="isotonic")
    calibrated = calibrator.predict(raw)
    assert cal.ece(calibrated, labels) < cal.ece(raw, labels)
    grid = calibrator.predict(np.linspace(0, 1, 50))
    assert np.all(np.diff(grid) >= 0)
    restored = cal.Calibrator(**json.loads(json.dumps(calibrator.as_dict())))
    assert np.allclose(restored.predict(raw), calibrated)


def test_logistic_fit_over_signals_with_missing_values() -> None:
    rows = [cal.features({"mean_logprob": -0.05, "min_prob": 0.9, "mean_entropy": 0.1, "p_yes": None})] * 20
    rows += [cal.features({"mean_logprob": -2.0, "min_prob": 0.05, "mean_entropy": 0.8, "p_yes": 0.2})] * 20
    labels = [1] * 20 + [0] * 20
    calibrator = cal.fit(rows, labels, method="logistic")
    predicted = calibrator.predict(rows)
    assert predicted[:20].min() > 0.8 and predicted[20:].max() < 0.2
    assert calibrator.params["features"] == list(cal.SIGNALS)


def test_fit_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        cal.fit([0.1, 0.2], [1, 1])


def test_reliability_bins() -> None:
    assert cal.reliability([0.05, 0.15, 0.12], [0, 1, 0]) == [(0.05, 0.0, 1), (pytest.approx(0.135), 0.5, 2)]


def test_isotonic_plateaus_are_ordered_by_the_raw_score() -> None:
    # A signal pointing the wrong way: isotonic regression pools it all into one plateau at the base rate.
    raw = [0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.4, 0.6]
    labels = [1, 0, 0, 0, 0, 1, 0, 0]
    calibrator = cal.fit(raw, labels, method="isotonic")
    calibrated = calibrator.predict(raw)
    assert np.allclose(calibrated, 0.25, atol=1e-5)  # calibration is untouched
    assert list(np.argsort(calibrated)) == list(np.argsort(raw))  # but a threshold can still split it
    assert cal.threshold_for_review_rate(calibrated, labels, 0.5).review_rate == pytest.approx(0.5)


def test_cross_validated_predictions_come_from_fits_that_did_not_see_the_label() -> None:
    rng = np.random.default_rng(3)
    raw = rng.uniform(0, 1, 400)
    labels = (rng.uniform(0, 1, 400) < raw).astype(int)
    held_out = cal.cross_validated(raw.tolist(), labels.tolist(), method="isotonic")
    in_sample = cal.fit(raw.tolist(), labels.tolist(), method="isotonic").predict(raw)
    assert held_out.shape == (400,) and not np.allclose(held_out, in_sample)
    # In-sample isotonic looks perfectly calibrated; held out, the same fit is honest about its error.
    assert cal.ece(in_sample, labels) < 1e-3 < cal.ece(held_out, labels) < 0.1
