"""What an agent reads instead of engineer's figures: why an answer was held, and what its signals say, as
sentences. The raw figures stay on the review page one click away; these are made from the stored exchange
alone (its routing reason, its signals, its token probabilities)."""

from __future__ import annotations

import math
import re
from typing import Any

from gateway.models import Exchange
from gateway.policy import NO_LOGPROBS

UNSURE_WORD = 0.6  # below this a token is a word the model was unsure of (the heat map marks it low or very low)

_BAND = re.compile(r"confidence (?P<value>[\d.]+) in \[(?P<low>[\d.]+), (?P<high>[\d.]+)[)\]] -> (?P<tier>\S+)")
_RULE = re.compile(r"rule '(?P<name>[^']*)' matched \((?P<facts>.*)\)$")
_TOOLS = re.compile(r"tool calls \((?P<names>.*)\) matched no rule -> (?P<tier>\S+)")
_UNSCORED = re.compile(r"unscored \((?P<why>.*)\)$")

# Why a signal is missing, as its code says it (`gateway/scoring`), in words.
MISSING = {
    "logprobs:tool_call": "a tool call has no word probabilities",
    "logprobs:empty_answer": "the answer is empty",
    "logprobs:not_returned": "the model sent no word probabilities",
    "logprobs:no_tokens": "the model sent no word probabilities",
    "tool_call:malformed_arguments": "a tool call's arguments are not valid JSON",
    "selfcheck:no_yes_no_token": "the self-check gave no yes or no",
    "selfcheck:unparseable": "the self-check's reply could not be read",
    "consistency:no_samples": "no second answers could be drawn to compare",
    "consistency:no_verdict": "the second answers could not be compared",
    "no signal": "nothing could be measured",
}


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def missing_in_words(code: str) -> str:
    if code.startswith("selfcheck:error:") or code.startswith("error:"):
        return "the self-check call failed"
    return MISSING.get(code, code)


def _confidence(exchange: Exchange, said: float) -> float:
    """The exchange's confidence, which every page shows; the routing reason keeps it to three decimals only
    (0.365 said 36% where the signals said 37%)."""
    return exchange.confidence if exchange.confidence is not None else said


def why_held(exchange: Exchange) -> str:
    """The routing reason as an agent would say it, e.g. "Unsure: 41% confident (agents review 30% to 92%)"."""
    reason = exchange.reason or ""
    if found := _BAND.match(reason):
        value, low, high = (float(found[name]) for name in ("value", "low", "high"))
        value = _confidence(exchange, value)
        return f"Unsure: {_percent(value)} confident ({found['tier']} tier reviews {_percent(low)} to {_percent(high)})"
    if found := _RULE.match(reason):
        return f"Held by the rule “{found['name']}” ({found['facts']})"
    if found := _TOOLS.match(reason):
        return f"Wants to call {found['names']}: no rule lets that through on its own"
    if found := _UNSCORED.match(reason):
        causes = [missing_in_words(part.strip()) for part in found["why"].split(",")]
        return "Could not be scored: " + "; ".join(causes)
    return reason or "Held"


def why_held_briefly(exchange: Exchange) -> str:
    """The same in a few words, for a queue column: "Unsure, 41%", "Rule “high-stakes”", "Calls issue_refund"."""
    reason = exchange.reason or ""
    if found := _BAND.match(reason):
        return f"Unsure, {_percent(_confidence(exchange, float(found['value'])))}"
    if found := _RULE.match(reason):
        return f"Rule “{found['name']}”"
    if found := _TOOLS.match(reason):
        return f"Calls {found['names']}"
    if _UNSCORED.match(reason):
        return "Not scored"
    return reason or "Held"


def token_prob(logprob: Any) -> float:
    """A token's probability from its logprob (0 when there is none to read)."""
    try:
        return math.exp(max(float(logprob), -100.0))
    except (TypeError, ValueError):
        return 0.0


def _unsure_words(response: dict[str, Any]) -> tuple[int, int, float | None]:
    """How many tokens of the first choice were unsure, of how many, and the least likely one's odds."""
    choices = response.get("choices") or [{}]
    content = ((choices[0].get("logprobs") or {}).get("content")) or []
    # Tokens without a readable logprob are not counted (the heat map shows them at 0%).
    readable = [token.get("logprob") for token in content if isinstance(token, dict)]
    probs = [token_prob(value) for value in readable if isinstance(value, int | float) and not isinstance(value, bool)]
    unsure = [prob for prob in probs if prob < UNSURE_WORD]
    return len(unsure), len(probs), min(probs) if probs else None


def _judged(p_yes: float) -> str:
    if p_yes >= 0.7:
        return "likely right"
    if p_yes <= 0.3:
        return "likely wrong"
    return "could not tell"


def sentences(exchange: Exchange) -> list[str]:
    """The signals, one sentence each, in the order an agent weighs them."""
    said = []
    unsure, total, least = _unsure_words(exchange.response)
    if total:
        if unsure:
            words = "word" if unsure == 1 else "words"
            said.append(
                f"The model was unsure of {unsure} {words} of {total} (the least sure at {_percent(least or 0)}):"
                " they are marked in the answer."
            )
        else:
            said.append(f"No word stands out: each of the {total} was at least {_percent(UNSURE_WORD)} likely.")
    check = exchange.signals.get("selfcheck") or {}
    if check.get("p_yes") is not None:
        said.append(f"The self-check judged it {_judged(float(check['p_yes']))} (P={float(check['p_yes']):.2f}).")
    consistency = exchange.signals.get("consistency") or {}
    if consistency.get("score") is not None:
        said.append(
            f"Asked again {consistency.get('samples', 0)} times, the model agreed with itself"
            f" {_percent(float(consistency['score']))} of the time."
        )
    for code in exchange.signals.get("missing") or []:
        said.append(f"Not measured: {missing_in_words(str(code))}.")
    if exchange.confidence is not None:
        calibrated = exchange.calibrator != "default"
        said.append(
            f"Overall {'calibrated ' if calibrated else ''}confidence: {_percent(exchange.confidence)},"
            f" {made_of(exchange)}."
        )
    return said


# The signals that can make a confidence (`signals.decided_by`), as an agent reads them.
SIGNAL_WORDS = {"logprobs": "the word probabilities", "selfcheck": "the self-check", "consistency": "the samples"}


def made_of(exchange: Exchange) -> str:
    """Which signals and which calibrator made the confidence, e.g. "from the self-check, calibrated by
    cal-4 (fitted on answers scored without word probabilities)"."""
    used = [SIGNAL_WORDS.get(name, name) for name in str(exchange.signals.get("decided_by") or "").split("+") if name]
    used = [name for name in used if name != "none"]
    listed = ", ".join(used[:-1]) + " and " + used[-1] if len(used) > 1 else "".join(used)
    source = f"from {listed}" if used else "from the signals above"
    if exchange.calibrator == "default":
        return f"{source}, by the default formula (no calibrator fitted yet)"
    on = exchange.signals.get("calibrated_on")
    fitted = {
        None: "",
        "pooled": " (fitted on every model's answers)",
        NO_LOGPROBS: " (fitted on answers scored without word probabilities)",
    }.get(on, f" (fitted on {on}'s answers)")
    return f"{source}, calibrated by {exchange.calibrator}{fitted}"
