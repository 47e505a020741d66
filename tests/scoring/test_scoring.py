"""Logprob signals and the default confidence, against values worked out by hand."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from gateway.scoring.confidence import combine, score_choices
from gateway.scoring.logprobs import LOGPROB_FLOOR, NO_SIGNALS, signals, top_k_entropy


def tok(logprob: float, top: list[float] | None = None) -> dict:
    token = {"token": "t", "logprob": logprob, "bytes": None}
    if top is not None:
        token["top_logprobs"] = [{"token": f"a{i}", "logprob": lp, "bytes": None} for i, lp in enumerate(top)]
    return token


def test_single_token_with_alternatives() -> None:
    # p = 0.5 chosen, 0.3 the runner-up, 0.2 left over: H = 1.029653 nats, / ln 3 = 0.937231.
    found = signals([tok(math.log(0.5), [math.log(0.5), math.log(0.3)])])
    assert found.tokens == 1
    assert found.mean_logprob == pytest.approx(-0.693147, abs=1e-6)
    assert found.min_prob == pytest.approx(0.5)
    assert found.mean_entropy == pytest.approx(0.9372306, abs=1e-6)
    # 0.6 * 0.5 + 0.2 * 0.5 + 0.2 * (1 - 0.9372306)
    assert combine(found) == pytest.approx(0.4125539, abs=1e-6)


def test_missing_top_logprobs_drops_the_entropy_term() -> None:
    found = signals([tok(-0.1), tok(-2.0)])
    assert found.mean_logprob == pytest.approx(-1.05)
    assert found.min_prob == pytest.approx(0.1353353, abs=1e-6)
    assert found.mean_entropy is None
    # (0.6 * e^-1.05 + 0.2 * e^-2) / 0.8
    assert combine(found) == pytest.approx(0.2962871, abs=1e-6)


def test_logprob_minus_9999_is_floored() -> None:
    found = signals([tok(-9999.0, [-9999.0])])
    assert found.mean_logprob == LOGPROB_FLOOR
    assert found.min_prob == pytest.approx(2.0611536e-09)
    # Nearly all mass sits outside the top 1, in one bucket: entropy ~0, so only the certainty term is left.
    assert found.mean_entropy == pytest.approx(0.0, abs=1e-6)
    assert combine(found) == pytest.approx(0.2, abs=1e-6)


def test_minus_infinity_and_nan_are_floored() -> None:
    assert signals([tok(float("-inf"))]).mean_logprob == LOGPROB_FLOOR
    assert signals([tok(float("nan"))]).mean_logprob == LOGPROB_FLOOR


def test_empty_answer_has_no_signals() -> None:
    assert signals([]) is NO_SIGNALS
    assert signals(None) is NO_SIGNALS
    assert combine(NO_SIGNALS) is None


def test_certain_token_has_zero_entropy() -> None:
    assert top_k_entropy([{"logprob": 0.0}]) == 0.0
    assert top_k_entropy([]) is None
    # Two equally likely alternatives that hold all the mass: ln 2 / ln 3.
    assert top_k_entropy([{"logprob": math.log(0.5)}, {"logprob": math.log(0.5)}]) == pytest.approx(
        math.log(2) / math.log(3)
    )


def _choice(content: list | None, text: str | None = "x", tool_calls: list | None = None) -> dict:
    message = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": 0, "message": message, "logprobs": {"content": content} if content is not None else None}


def test_weakest_choice_decides() -> None:
    score = score_choices([_choice([tok(-0.01)]), _choice([tok(-3.0)])])
    assert score.confidence == pytest.approx(score.signals["choices"][1]["confidence"])
    assert score.signals["missing"] == [] and score.signals["formula"] == "logprob-v1"


@pytest.mark.parametrize(
    ("choice", "why"),
    [
        (_choice(None), "logprobs:not_returned"),
        (_choice(None, text=""), "logprobs:empty_answer"),
        (_choice(None, text=None, tool_calls=[{"id": "c"}]), "logprobs:tool_call"),
    ],
)
def test_unscored_answers_record_why(choice: dict, why: str) -> None:
    score = score_choices([choice])
    assert score.confidence is None
    assert score.signals["missing"] == [why]
    assert score.signals["choices"][0]["tokens"] == 0


def test_one_unscored_choice_makes_the_answer_unscored() -> None:
    assert score_choices([_choice([tok(-0.01)]), _choice(None)]).confidence is None


def test_vectorized_signals_match_the_per_token_reference() -> None:
    rng = random.Random(11)
    content = []
    for index in range(300):
        k = rng.choice([0, 1, 3, 5, 20])
        alternatives = [{"token": f"t{j}", "logprob": math.log(rng.uniform(0.001, 0.3))} for j in range(k)]
        if index % 50 == 0 and alternatives:
            alternatives[0]["logprob"] = -9999.0
        logprob = rng.choice([math.log(rng.uniform(0.01, 1.0)), -9999.0, float("-inf"), float("nan")])
        content.append({"token": f"w{index}", "logprob": logprob, "top_logprobs": alternatives})
    found = signals(content)
    floored = [max(LOGPROB_FLOOR, t["logprob"]) if not math.isnan(t["logprob"]) else LOGPROB_FLOOR for t in content]
    entropies = [e for t in content if (e := top_k_entropy(t["top_logprobs"])) is not None]
    assert found.mean_logprob == pytest.approx(sum(floored) / len(floored))
    assert found.min_prob == pytest.approx(math.exp(min(floored)))
    assert found.mean_entropy == pytest.approx(sum(entropies) / len(entropies))


def test_signals_as_a_dict_are_every_field_of_them() -> None:
    content = [{"logprob": -0.2, "top_logprobs": [{"logprob": -0.2}, {"logprob": -1.9}]}, {"logprob": -0.01}]
    for found in (signals(content), NO_SIGNALS):
        assert found.as_dict() == dataclasses.asdict(found)
