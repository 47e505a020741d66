"""The default confidence, before any calibration on agents' decisions.

    confidence = 0.6 * exp(mean_logprob) + 0.2 * min_prob + 0.2 * (1 - mean_entropy)

Each term lies in [0, 1], so the sum does too. The geometric mean token probability carries most of
the weight; the weakest token and the spread of alternatives pull it down where the model hesitated.
Without top_logprobs the entropy term is dropped and the other two weights are scaled up to sum to 1.
An answer with no scored tokens (no logprobs from the provider, an empty answer, a tool call) gets no
logprob confidence.

When the self-check ran (see `selfcheck.py`) and gave P(yes), it is mixed in:

    confidence = (1 - w) * logprob_confidence + w * p_yes        (w = HITL_SELFCHECK__WEIGHT, 0.5)

or `p_yes` alone when there is no logprob confidence. The optional consistency signal (see
`consistency.py`) is mixed in the same way with its own weight (HITL_CONSISTENCY__WEIGHT, 0.25). With
no signal at all, the answer has no confidence: the policy routes it by its `unscored` outcome, and the
exchange records why.

Once `hitl calibrate` has fitted a calibrator and the policy names it, `calibrated()` maps this
uncalibrated confidence (isotonic) or the signals themselves (logistic) to the confidence the policy
sees; the exchange records the calibrator's version and keeps the uncalibrated value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.scoring.calibrator import Calibrator, features, signal_values
from gateway.scoring.consistency import Consistency
from gateway.scoring.logprobs import LogprobSignals, signals
from gateway.scoring.selfcheck import SelfCheck

FORMULA = "logprob-v1"
WEIGHTS = {"geometric_mean_prob": 0.6, "min_prob": 0.2, "certainty": 0.2}


def combine(found: LogprobSignals) -> float | None:
    if found.missing or found.mean_logprob is None or found.min_prob is None:
        return None
    terms = {
        "geometric_mean_prob": math.exp(found.mean_logprob),
        "min_prob": found.min_prob,
    }
    if found.mean_entropy is not None:
        terms["certainty"] = 1.0 - found.mean_entropy
    weight = sum(WEIGHTS[name] for name in terms)
    value = sum(WEIGHTS[name] * term for name, term in terms.items()) / weight
    return min(1.0, max(0.0, value))


@dataclass
class Score:
    """What scoring found for one candidate completion."""

    confidence: float | None
    signals: dict[str, Any] = field(default_factory=dict)


def score_choices(choices: Sequence[dict[str, Any]]) -> Score:
    """Score every choice; the weakest one decides, because every choice would reach the client."""
    per_choice: list[dict[str, Any]] = []
    weakest: float | None = None
    missing: list[str] = []
    for index, choice in enumerate(choices):
        content = ((choice.get("logprobs") or {}).get("content")) or None
        found = signals(content)
        confidence = combine(found)
        per_choice.append({"index": index, **found.as_dict(), "confidence": confidence})
        if confidence is None:
            missing.append(_why_missing(choice))
        elif weakest is None or confidence < weakest:
            weakest = confidence
    if missing:
        # One unscored choice makes the whole answer unscored: it must not ride on the others.
        weakest = None
    result: dict[str, Any] = {"formula": FORMULA, "missing": sorted(set(missing)), "choices": per_choice}
    return Score(confidence=weakest, signals=result)


def _mixed(score: Score, value: float | None, weight: float) -> float | None:
    if value is None:
        return score.confidence
    if score.confidence is None:
        return value
    return (1 - weight) * score.confidence + weight * value


def with_selfcheck(score: Score, check: SelfCheck, weight: float) -> Score:
    """The score once the self-check is in; the logprob confidence stays recorded on its own."""
    found = {**score.signals, "logprob_confidence": score.confidence, "selfcheck": check.as_dict()}
    found["formula"] = f"{score.signals['formula']}+selfcheck(w={weight:g})"
    if check.missing is not None:
        found["missing"] = sorted({*score.signals["missing"], check.missing})
    return Score(confidence=_mixed(score, check.p_yes, weight), signals=found)


def with_consistency(score: Score, found: Consistency, weight: float) -> Score:
    """The score once the consistency samples are in."""
    signals = {**score.signals, "consistency": found.as_dict()}
    signals["formula"] = f"{score.signals['formula']}+consistency(w={weight:g})"
    if found.missing is not None:
        signals["missing"] = sorted({*score.signals["missing"], found.missing})
    return Score(confidence=_mixed(score, found.score, weight), signals=signals)


def calibrated(score: Score, calibrator: Calibrator | None, version: str) -> Score:
    """The confidence a fitted calibrator gives; the uncalibrated one stays in the signals as `raw_confidence`.

    Without a calibrator (`version` "default") the documented formula above is the confidence.
    """
    signals = {**score.signals, "raw_confidence": score.confidence, "calibrator": version}
    if calibrator is None:
        return Score(confidence=score.confidence, signals=signals)
    if calibrator.method == "isotonic":
        if score.confidence is None:
            return Score(confidence=None, signals=signals)
        return Score(confidence=float(calibrator.predict([score.confidence])[0]), signals=signals)
    values = signal_values(signals)
    if all(value is None for value in values.values()):
        return Score(confidence=None, signals=signals)
    return Score(confidence=float(calibrator.predict([features(values)])[0]), signals=signals)


def _why_missing(choice: dict[str, Any]) -> str:
    message = choice.get("message") or {}
    if message.get("tool_calls") and not message.get("content"):
        return "logprobs:tool_call"
    if not (choice.get("logprobs") or {}).get("content"):
        if not message.get("content"):
            return "logprobs:empty_answer"
        return "logprobs:not_returned"
    return "logprobs:no_tokens"
