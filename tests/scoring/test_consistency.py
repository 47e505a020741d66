"""The consistency signal: k sampled answers, a judge verdict on each, mixed into the confidence."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.app import create_app
from gateway.models import Exchange
from gateway.scoring.confidence import Score, with_consistency
from gateway.scoring.consistency import Consistency
from gateway.settings import ConsistencySettings
from tests import factories
from tests.factories import MODEL, judge_reply

QUESTION = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "hitl": {"wait": 0}}


def mocked(candidate: str, samples: list[str], agreements: list[float], fail_samples: bool = False) -> object:
    """Candidate first; calls without logprobs are samples; one-token calls with logprobs are the judge."""
    seen = {"sample": 0, "judge": 0}

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("max_tokens") == 1:
            reply = judge_reply(yes=agreements[seen["judge"] % len(agreements)], tokens=50)
            seen["judge"] += 1
            return httpx.Response(200, json=reply)
        if "logprobs" not in body:
            if fail_samples:
                return httpx.Response(503, json={"error": {"message": "busy"}})
            text = samples[seen["sample"] % len(samples)]
            seen["sample"] += 1
            reply = factories.completion_body(text, logprob=None)
            reply["usage"] = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            return httpx.Response(200, json=reply)
        return httpx.Response(200, json=factories.completion_body(candidate, logprob=-0.1))

    return respond


def ask(settings, api_key: str) -> Exchange:
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/chat/completions", json=QUESTION, headers={"Authorization": f"Bearer {api_key}"})
        assert response.status_code == 200, response.text
    with factories.sync_session(settings.database_url) as session:
        return session.exec(select(Exchange)).one()


def test_off_by_default_makes_one_upstream_call(make_settings, api_key: str, upstream: factories.UpstreamMock) -> None:
    route = upstream.respond(mocked("Paris.", ["Paris."], [0.9]))
    exchange = ask(make_settings(), api_key)
    assert route.call_count == 1
    assert "consistency" not in exchange.signals


def test_samples_are_judged_against_the_candidate(
    make_settings, api_key: str, upstream: factories.UpstreamMock
) -> None:
    route = upstream.respond(mocked("Paris.", ["Paris.", "Lyon.", "Paris, France."], [0.9, 0.2, 0.7]))
    settings = make_settings(consistency=ConsistencySettings(samples=3, temperature=0.8, weight=0.25))
    exchange = ask(settings, api_key)
    assert route.call_count == 1 + 3 + 3
    bodies = [json.loads(call.request.content) for call in route.calls]
    samples = [body for body in bodies if "logprobs" not in body]
    assert len(samples) == 3 and all(body["temperature"] == 0.8 for body in samples)
    judged = [body["messages"][0]["content"] for body in bodies if body.get("max_tokens") == 1]
    assert all("Answer A: Paris." in prompt for prompt in judged)
    assert {prompt.split("Answer B: ")[1].split("\n")[0] for prompt in judged} == {"Paris.", "Lyon.", "Paris, France."}

    found = exchange.signals["consistency"]
    # The judge's calls finish in the order they were made against the mock, so agreements keep that order.
    assert found["score"] == pytest.approx((0.9 + 0.2 + 0.7) / 3)
    assert found["samples"] == 3 and found["template"] == "consistency-v1"
    assert found["tokens"] == 3 * 15 + 3 * 50 and found["latency_ms"] > 0
    logprob_confidence = exchange.signals["choices"][0]["confidence"]
    assert exchange.signals["formula"] == "logprob-v1+consistency(w=0.25)"
    assert exchange.confidence == pytest.approx(0.75 * logprob_confidence + 0.25 * found["score"])
    assert exchange.calibrator == "default" and exchange.signals["raw_confidence"] == exchange.confidence


def test_lost_samples_are_missing_not_a_number(make_settings, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.respond(mocked("Paris.", ["x"], [0.9], fail_samples=True))
    exchange = ask(make_settings(consistency=ConsistencySettings(samples=2)), api_key)
    assert exchange.signals["consistency"]["score"] is None
    assert "consistency:no_samples" in exchange.signals["missing"]
    assert exchange.confidence is not None  # the logprob confidence still routes it


def test_mixing_hand_computed() -> None:
    score = Score(confidence=0.8, signals={"missing": [], "formula": "logprob-v1"})
    mixed = with_consistency(score, Consistency(score=0.4, samples=2, agreements=[0.5, 0.3]), weight=0.25)
    assert mixed.confidence == pytest.approx(0.75 * 0.8 + 0.25 * 0.4)
    alone = with_consistency(Score(None, {"missing": [], "formula": "f"}), Consistency(0.4, 2), weight=0.25)
    assert alone.confidence == 0.4
