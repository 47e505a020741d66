"""Signals read from the token logprobs of one answer (OpenAI `choices[i].logprobs.content`).

- `mean_logprob`: the mean of the tokens' natural-log probabilities; `exp(mean_logprob)` is the
  geometric mean token probability.
- `min_prob`: the probability of the least likely token, the one place the model was least sure.
- `mean_entropy`: for each token, the entropy of its top-k alternatives plus one bucket for the mass
  outside the top k, divided by `ln(k + 1)` so that it lies in [0, 1]; then the mean over tokens
  that carry top_logprobs. 0 = the model saw no alternative, 1 = it could not choose.

Providers write `-9999` (OpenAI) or `-inf` for "too small to represent"; logprobs are floored at
`LOGPROB_FLOOR` so that one such token weighs like a very unlikely token, not like an infinite one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LOGPROB_FLOOR = -20.0


@dataclass(frozen=True, slots=True)
class LogprobSignals:
    tokens: int
    mean_logprob: float | None
    min_prob: float | None
    mean_entropy: float | None

    @property
    def missing(self) -> bool:
        return self.tokens == 0

    def as_dict(self) -> dict[str, Any]:
        # By hand: `dataclasses.asdict` deep-copies each field through a generic walk, on every scored request.
        return {
            "tokens": self.tokens,
            "mean_logprob": self.mean_logprob,
            "min_prob": self.min_prob,
            "mean_entropy": self.mean_entropy,
        }


NO_SIGNALS = LogprobSignals(tokens=0, mean_logprob=None, min_prob=None, mean_entropy=None)


def _floored(value: Any) -> float:
    number = float(value)
    if math.isnan(number):
        return LOGPROB_FLOOR
    return max(number, LOGPROB_FLOOR)


def top_k_entropy(top: Sequence[dict[str, Any]]) -> float | None:
    """Normalized entropy of one token's top-k alternatives plus the remaining mass."""
    if not top:
        return None
    probs = [math.exp(_floored(alt["logprob"])) for alt in top]
    rest = 1.0 - sum(probs)
    if rest > 1e-12:
        probs.append(rest)
    entropy = -sum(p * math.log(p) for p in probs if p > 0.0)
    return min(1.0, max(0.0, entropy / math.log(len(top) + 1)))


def signals(content: Sequence[dict[str, Any]] | None) -> LogprobSignals:
    """All logprob signals of one answer; `NO_SIGNALS` when it has no scored tokens.

    Vectorized with numpy (the request path scores every answer): the same arithmetic as `top_k_entropy` per
    token, on a tokens x k array padded where a token has fewer alternatives. A few whole-array operations,
    not one per token: `p * log(p)` is `p * x` for `p = exp(x)`, and every floored `x` has `p > 0`.
    """
    if not content:
        return NO_SIGNALS
    chosen = _floor_array(np.array([token["logprob"] for token in content], dtype=float))
    tops = [token.get("top_logprobs") or () for token in content]
    counts = [len(top) for top in tops]
    width = max(counts)
    mean_entropy = None
    if width:
        flat = np.array([alternative["logprob"] for top in tops for alternative in top], dtype=float)
        if min(counts) == width:  # the usual answer: every token has its k alternatives
            raw = _floor_array(flat).reshape(len(tops), width)
            k = np.full(len(tops), width)
            probs = np.exp(raw)
        else:
            k = np.array(counts)
            present = np.arange(width) < k[:, None]
            raw = np.zeros((len(tops), width))  # a missing alternative: x = 0 with p = 0, so p * x = 0
            raw[present] = _floor_array(flat)
            probs = np.where(present, np.exp(raw), 0.0)
            raw, probs, k = raw[k > 0], probs[k > 0], k[k > 0]
        terms = (probs * raw).sum(axis=1)
        rest = 1.0 - probs.sum(axis=1)
        outside = rest > 1e-12
        terms[outside] += rest[outside] * np.log(rest[outside])
        mean_entropy = float(np.clip(-terms / np.log(k + 1), 0.0, 1.0).mean())
    return LogprobSignals(
        tokens=len(content),
        mean_logprob=float(chosen.mean()),
        min_prob=float(np.exp(min(chosen.min(), 0.0))),
        mean_entropy=mean_entropy,
    )


def _floor_array(values: np.ndarray) -> np.ndarray:
    """`values` floored at `LOGPROB_FLOOR`; NaN becomes the floor too (`fmax` takes the number over a NaN)."""
    floored: np.ndarray = np.fmax(values, LOGPROB_FLOOR)
    return floored
