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
from dataclasses import asdict, dataclass
from typing import Any

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
        return asdict(self)


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
    """All logprob signals of one answer; `NO_SIGNALS` when it has no scored tokens."""
    if not content:
        return NO_SIGNALS
    total = 0.0
    lowest = 0.0
    entropy_sum = 0.0
    entropy_count = 0
    for token in content:
        logprob = _floored(token["logprob"])
        total += logprob
        lowest = min(lowest, logprob)
        entropy = top_k_entropy(token.get("top_logprobs") or ())
        if entropy is not None:
            entropy_sum += entropy
            entropy_count += 1
    return LogprobSignals(
        tokens=len(content),
        mean_logprob=total / len(content),
        min_prob=math.exp(lowest),
        mean_entropy=entropy_sum / entropy_count if entropy_count else None,
    )
