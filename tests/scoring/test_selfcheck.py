"""The self-check signal: P(yes) from the judge's first token, the verbalized fallback, and the modes."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.conversation.chat import question_of
from gateway.conversation.upstream import OpenAICompatible, Upstreams
from gateway.models import Exchange
from gateway.prompt_templates import Prompts
from gateway.scoring.confidence import Score, with_selfcheck
from gateway.scoring.selfcheck import Judge, SelfCheck, SelfChecker, p_yes_from_logprobs, parse_verbalized
from gateway.settings import SelfCheckSettings, UpstreamSettings
from tests import factories
from tests.factories import MODEL, UPSTREAM, first_token, judge_reply


def test_p_yes_sums_case_and_spacing_variants() -> None:
    token = first_token(("Yes", 0.4), (" yes", 0.1), ("No", 0.2), (" NO.", 0.1), ("The", 0.2))
    # (0.4 + 0.1) / (0.4 + 0.1 + 0.2 + 0.1)
    assert p_yes_from_logprobs(token) == pytest.approx(0.625)


def test_p_yes_without_yes_or_no_is_missing() -> None:
    assert p_yes_from_logprobs(first_token(("The", 0.5), ("Paris", 0.3))) is None
    assert p_yes_from_logprobs(None) is None


def test_p_yes_single_token_without_alternatives() -> None:
    assert p_yes_from_logprobs({"token": "No", "logprob": -0.01}) == 0.0
    assert p_yes_from_logprobs({"token": "yes", "logprob": -9999.0, "top_logprobs": []}) == 1.0


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("85", 0.85),
        ("Confidence: 70%", 0.70),
        ("100", 1.0),
        ("0", 0.0),
        ("I'd say 42.5 out of 100", 0.425),
        ("250", None),
        ("no idea", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verbalized(reply: str | None, value: float | None) -> None:
    assert parse_verbalized(reply) == (pytest.approx(value) if value is not None else None)


def test_question_is_the_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {}}]},
    ]
    assert question_of(messages) == "second"


@pytest.mark.parametrize(
    ("mode", "confidence", "wanted"),
    [
        ("never", None, False),
        ("always", 0.99, True),
        ("grey_zone", 0.8, True),
        ("grey_zone", 0.99, False),
        ("grey_zone", 0.2, False),
        ("grey_zone", None, True),
    ],
)
def test_modes(mode: str, confidence: float | None, wanted: bool) -> None:
    checker = SelfChecker(SelfCheckSettings(mode=mode, grey_low=0.5, grey_high=0.95), Judge(Prompts(), Upstreams([])))  # type: ignore[arg-type]
    assert checker.wanted(confidence) is wanted


def test_combination_hand_computed() -> None:
    score = Score(confidence=0.8, signals={"missing": [], "formula": "logprob-v1"})
    check = SelfCheck(p_yes=0.2, method="logprobs", template="selfcheck-v1", latency_ms=5.0, tokens=70)
    combined = with_selfcheck(score, check, weight=0.5)
    assert combined.confidence == pytest.approx(0.5)  # 0.5 * 0.8 + 0.5 * 0.2
    assert combined.signals["logprob_confidence"] == 0.8 and combined.signals["selfcheck"]["p_yes"] == 0.2
    alone = with_selfcheck(Score(None, {"missing": ["logprobs:not_returned"], "formula": "f"}), check, weight=0.5)
    assert alone.confidence == 0.2
    failed = SelfCheck(None, "none", "selfcheck-v1", 5.0, 70, "selfcheck:unparseable")
    kept = with_selfcheck(score, failed, weight=0.5)
    assert kept.confidence == 0.8 and kept.signals["missing"] == ["selfcheck:unparseable"]


def router(answer: dict, judge: dict | list[dict]) -> object:
    """The mocked upstream: the judge's calls are the ones with a tiny max_tokens."""
    judges = judge if isinstance(judge, list) else [judge]
    calls = {"judge": 0}

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("max_tokens", 1000) <= 8:
            reply = judges[min(calls["judge"], len(judges) - 1)]
            calls["judge"] += 1
            return httpx.Response(200, json=reply)
        return httpx.Response(200, json=answer)

    return respond


def test_selfcheck_is_recorded_with_template_latency_and_tokens(
    make_settings, api_key: str, database_url: str, upstream: factories.UpstreamMock
) -> None:
    from gateway.app import create_app

    route = upstream.respond(router(factories.completion_body("Lyon.", logprob=-0.2), judge_reply(yes=0.1)))
    settings = make_settings(selfcheck=SelfCheckSettings(mode="grey_zone"))
    with TestClient(create_app(settings)) as client:
        hitl = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "hitl": {"wait": 0}},
            headers={"Authorization": f"Bearer {api_key}"},
        ).json()["hitl"]
    judge_call = json.loads(route.calls[1].request.content)
    assert judge_call["max_tokens"] == 1 and judge_call["top_logprobs"] == 10
    assert (
        "Capital of France?" in judge_call["messages"][0]["content"] and "Lyon." in judge_call["messages"][0]["content"]
    )
    with factories.sync_session(database_url) as session:
        exchange = session.exec(select(Exchange)).one()
    check = exchange.signals["selfcheck"]
    assert check["method"] == "logprobs" and check["template"] == "selfcheck-v1"
    assert check["p_yes"] == pytest.approx(0.1) and check["tokens"] == 60 and check["latency_ms"] > 0
    logprob_confidence = exchange.signals["logprob_confidence"]
    assert exchange.confidence == pytest.approx(0.5 * logprob_confidence + 0.5 * 0.1)
    assert hitl["confidence"] == pytest.approx(exchange.confidence)


async def test_judge_without_logprobs_is_asked_for_a_number(upstream: factories.UpstreamMock) -> None:
    route = upstream.answer(judge_reply(text="73"))
    async with httpx.AsyncClient() as client:
        judge = OpenAICompatible(UpstreamSettings(name="judge", api_base=UPSTREAM, logprobs=False), client)
        checker = SelfChecker(SelfCheckSettings(mode="always"), Judge(Prompts(), Upstreams([judge])))
        check = await checker.run("judge", "Q?", "A.")
    assert (check.p_yes, check.method, check.template) == (pytest.approx(0.73), "verbalized", "selfcheck-verbal-v1")
    sent = json.loads(route.calls.last.request.content)
    assert "logprobs" not in sent and "0 (certainly wrong) to 100" in sent["messages"][0]["content"]


async def test_unparseable_and_failed_judges_are_missing_not_numbers(upstream: factories.UpstreamMock) -> None:
    async with httpx.AsyncClient() as client:
        judge = OpenAICompatible(UpstreamSettings(name="judge", api_base=UPSTREAM, logprobs=False), client)
        checker = SelfChecker(SelfCheckSettings(mode="always"), Judge(Prompts(), Upstreams([judge])))
        upstream.answer(judge_reply(text="Sure!"))
        unparseable = await checker.run("judge", "Q?", "A.")
        upstream.answer({"error": {"message": "down"}}, status=503)
        failed = await checker.run("judge", "Q?", "A.")
    assert unparseable.p_yes is None and unparseable.missing == "selfcheck:unparseable"
    assert failed.p_yes is None and failed.missing == "selfcheck:error:upstream_error"


async def test_logprob_judge_without_yes_or_no_is_missing(upstream: factories.UpstreamMock) -> None:
    reply = judge_reply()
    reply["choices"][0]["logprobs"] = {"content": [first_token(("The", 0.6), ("Paris", 0.3))]}
    upstream.answer(reply)
    async with httpx.AsyncClient() as client:
        judge = OpenAICompatible(UpstreamSettings(name="judge", api_base=UPSTREAM), client)
        check = await SelfChecker(SelfCheckSettings(mode="always"), Judge(Prompts(), Upstreams([judge]))).run(
            "judge", "Q", "A"
        )
    assert check.p_yes is None and check.missing == "selfcheck:no_yes_no_token"


def test_unknown_judge_is_a_configuration_error(make_settings) -> None:
    with pytest.raises(ValueError, match="gpt-judge"):
        make_settings(selfcheck=SelfCheckSettings(judge="gpt-judge"))
    assert make_settings(selfcheck=SelfCheckSettings(judge=MODEL)).selfcheck.judge == MODEL
