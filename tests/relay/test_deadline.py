"""What a client gets when nobody decides in time: the tier's `on_deadline` outcome, recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlmodel import select

from gateway import policy
from gateway.app import create_app
from gateway.models import Action, Exchange, Review, ReviewKind
from gateway.policy import PolicyError
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests import factories
from tests.factories import MODEL

UNSURE = factories.completion_body('{"city": "Lyon"}', logprob=-1.5)  # confidence ~0.2: the senior tier
QUESTION = [{"role": "user", "content": "Capital of France?"}]
BASE = policy.DEFAULT_POLICY.read_text()


class City(BaseModel):
    city: str


def app_with(make_settings: Callable[..., Settings], tmp_path: Path, on_deadline: str | None) -> TestClient:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE + (f"on_deadline: {{senior: {on_deadline}}}\n" if on_deadline else ""))
    return TestClient(create_app(make_settings(policy_path=path)))


def sdk(client: TestClient, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=retries)


def stored(url: str) -> tuple[Exchange, Review]:
    with factories.sync_session(url) as session:
        return session.exec(select(Exchange)).one(), session.exec(select(Review)).one()


def test_plain_text_gets_the_placeholder_and_it_is_recorded(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
) -> None:
    upstream.answer(UNSURE)
    with app_with(make_settings, tmp_path, None) as client:
        completion = sdk(client, api_key).chat.completions.create(
            model=MODEL, messages=QUESTION, extra_body={"hitl": {"wait": 0}}
        )
    assert completion.choices[0].message.content and "support team" in completion.choices[0].message.content
    assert stored(database_url)[0].deadline_outcome == "placeholder"


def test_structured_output_gets_a_refusal_that_parse_returns(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
) -> None:
    upstream.answer(UNSURE)
    with app_with(make_settings, tmp_path, None) as client:
        parsed = sdk(client, api_key).chat.completions.parse(
            model=MODEL, messages=QUESTION, response_format=City, extra_body={"hitl": {"wait": 0}}
        )
    message = parsed.choices[0].message
    assert message.parsed is None and message.content is None
    assert message.refusal and "support team" in message.refusal
    assert stored(database_url)[0].deadline_outcome == "refusal"


def test_a_request_with_tools_gets_a_refusal_by_default() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert policy.parse(BASE).on_deadline("agent", {"tools": tools}) == "refusal"
    assert policy.parse(BASE).on_deadline("agent", {"messages": []}) == "placeholder"


def test_error_outcome_is_not_retried_and_names_the_review(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
) -> None:
    upstream.answer(UNSURE)
    with app_with(make_settings, tmp_path, "error") as client:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk(client, api_key, retries=2).chat.completions.create(
                model=MODEL, messages=QUESTION, extra_body={"hitl": {"wait": 0}}
            )
    response = caught.value.response
    exchange, review = stored(database_url)  # one exchange, one review: the SDK did not retry
    assert response.status_code == 504 and response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["type"] == "review_pending" and error["review_id"] == review.id and review.id in error["poll_url"]
    assert response.headers["x-hitl-review-id"] == review.id and response.headers["x-hitl-status"] == "pending"
    assert upstream.chat.call_count == 1 and exchange.deadline_outcome == "error"


def test_error_outcome_on_a_stream_is_an_error_event(
    make_settings: Callable[..., Settings], tmp_path: Path, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(UNSURE)
    body = {"model": MODEL, "messages": QUESTION, "stream": True, "hitl": {"wait": 0}}
    with app_with(make_settings, tmp_path, "error") as client:
        response = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert response.status_code == 200 and json.loads(events[-1])["error"]["type"] == "review_pending"


def test_release_outcome_sends_the_candidate_and_keeps_the_review_open_as_an_audit(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
    senior: tuple[str, str],
) -> None:
    upstream.answer(UNSURE)
    with app_with(make_settings, tmp_path, "release") as client:
        result = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": QUESTION, "hitl": {"wait": 0}, "logprobs": True, "top_logprobs": 1},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert result.json()["hitl"]["status"] == "released_on_deadline"
        assert result.json()["choices"][0]["message"]["content"] == '{"city": "Lyon"}'
        # The waiter held a copy without logprobs; what it releases is read back whole from the database.
        exchange, review = stored(database_url)
        sent, kept = result.json()["choices"][0]["logprobs"]["content"], exchange.response["choices"][0]["logprobs"]
        assert [(t["token"], t["logprob"]) for t in sent] == [(t["token"], t["logprob"]) for t in kept["content"]]
        assert sent and all(len(t["top_logprobs"]) == 1 for t in sent)  # as many as the client asked for
        assert exchange.status == "released_on_deadline" and exchange.deadline_outcome == "release"
        assert review.status == "open" and review.kind == ReviewKind.AUDIT
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        decided = client.portal.call(factories.decide_as, runtime, senior[0], review.id, Action.OVERRIDE, "Paris.")  # type: ignore[union-attr]
    assert decided.review.status == "decided"
    assert stored(database_url)[0].status == "released_on_deadline"  # the label changes nothing delivered


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("on_deadline: {legal: error}\n", "on_deadline.legal: tier 'legal' is not in tiers"),
        ("on_deadline: {senior: shrug}\n", "on_deadline.senior: Input should be"),
    ],
)
def test_bad_on_deadline_is_refused(extra: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy.parse(BASE + extra)
