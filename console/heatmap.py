"""The candidate as a token heat map: each token with its probability, a level for its colour, and the
model's top alternatives for the hover text. Built from the logprobs the gateway stored with the exchange."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.review.explanations import UNSURE_WORD, token_prob

# Probability bands: `low` and `very-low` tokens are the ones an agent should read twice, and the ones the
# review's sentences count as words the model was unsure of.
LEVELS = ((0.9, "sure"), (UNSURE_WORD, "ok"), (0.3, "low"), (0.0, "very-low"))


@dataclass(frozen=True)
class Token:
    text: str
    prob: float
    level: str
    alternatives: str  # for the title attribute: "'Paris' 62%, 'Lyon' 20%"


def _level(prob: float) -> str:
    return next(name for floor, name in LEVELS if prob >= floor)


def tokens(response: dict[str, Any], choice: int = 0) -> list[Token]:
    """The heat map of one choice; empty when the provider returned no logprobs."""
    choices = response.get("choices") or []
    if choice >= len(choices):
        return []
    content = ((choices[choice].get("logprobs") or {}).get("content")) or []
    found = []
    for item in content:
        prob = token_prob(item.get("logprob"))
        others = [alt for alt in item.get("top_logprobs") or [] if alt.get("token") != item.get("token")]
        hint = ", ".join(f"{alt.get('token', '')!r} {token_prob(alt.get('logprob')):.0%}" for alt in others[:5])
        label = f"p = {prob:.0%}" + (f"; alternatives: {hint}" if hint else "")
        found.append(Token(text=str(item.get("token", "")), prob=prob, level=_level(prob), alternatives=label))
    return found
