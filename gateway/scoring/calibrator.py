"""The calibrator the policy names, as the request path applies it: from the signals an exchange
recorded to a confidence that means "an agent would release this unchanged".

Isotonic maps the uncalibrated confidence; logistic maps the signals themselves (each with a missing
indicator). Both are plain JSON parameters evaluated with numpy: fitting them is the learning loop's
work (`gateway.learning.fitting`), never the request path's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from gateway.policy import NO_LOGPROBS

Method = Literal["isotonic", "logistic"]
SIGNALS = ("mean_logprob", "min_prob", "mean_entropy", "p_yes", "consistency")
FloatArray = np.ndarray
TIE_BREAK = 1e-6


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


def calibration_group(model: str, signals: dict[str, Any]) -> str:
    """Which calibrator an answer's confidence belongs to: the model's own when every choice was scored from
    the model's logprobs, else the one for answers scored without them (tool calls, providers without logprobs),
    whatever the model: their confidence comes from the judge and the samples, not from the model's tokens."""
    choices = signals.get("choices") or []
    scored = all(choice.get("confidence") is not None for choice in choices)
    return model if choices and scored else NO_LOGPROBS


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
            return np.asarray(np.clip(np.interp(x, xs, ys) + TIE_BREAK * (x - 0.5), 0.0, 1.0), dtype=float)
        rows = np.atleast_2d(np.asarray(inputs, dtype=float))
        logits = rows @ np.asarray(self.params["coef"]) + self.params["intercept"]
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=float)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}


@dataclass(frozen=True)
class Active:
    """A stored calibrator, ready for the request path."""

    calibrator: Calibrator
    version: str


@dataclass(frozen=True)
class Calibrators:
    """The calibrators a policy names: one per calibration group it names, the pooled one for the others
    (none: the documented default formula)."""

    pooled: Active | None = None
    groups: dict[str, Active] = field(default_factory=dict)

    def for_group(self, group: str) -> Active | None:
        return self.groups.get(group, self.pooled)


UNCALIBRATED = Calibrators()  # a policy that names none: the documented default formula
