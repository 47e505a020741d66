"""Calibration metrics and thresholds, on small hand-checked data."""

from __future__ import annotations

import math

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


def test_reliability_bins() -> None:
    assert cal.reliability([0.05, 0.15, 0.12], [0, 1, 0]) == [(0.05, 0.0, 1), (pytest.approx(0.135), 0.5, 2)]
