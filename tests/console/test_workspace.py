"""The agents' workspace over the console's real routes: the queue says why each answer was held, whether a
client still waits and for how long, its tags and how it stands against the tier's target wait, and opens on
the busiest tier the agent may decide; a review reads in plain words, with the question as its title; a
decision opens the next review; a canned override keeps what the agent sent."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import policy
from gateway.models import Exchange, Role
from gateway.policy import PolicyError
from gateway.review import explanations
from gateway.runtime import Runtime
from tests import factories
from tests.factories import MODEL, console_login, held


def ask(client: TestClient, upstream: factories.UpstreamMock, key: str, question: str, logprob: float) -> str:
    upstream.answer(factories.completion_body("Lyon.", logprob=logprob))
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "hitl": {"wait": 0}}
    reply = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    return str(reply.json()["hitl"]["review_id"])


def row_of(page: str, review_id: str) -> str:
    return page.split(f'id="review-{review_id}"')[1].split("</tr>")[0]


def test_the_queue_opens_on_the_busiest_tier_the_agent_may_decide(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str], database_url: str
) -> None:
    ask(client, upstream, api_key, "One?", -0.2)  # agent tier
    ask(client, upstream, api_key, "Two?", -1.5)  # senior tier
    ask(client, upstream, api_key, "Three?", -1.5)
    factories.make_agent(database_url, "root", "admin password 1", Role.ADMIN)
    console_login(client, "root", "admin password 1")
    assert 'class="active" data-tier="senior"' in client.get("/console/").text  # 2 beats 1
    console_login(client, *agent)
    assert 'class="active" data-tier="agent"' in client.get("/console/").text  # the only tier it may decide


def test_a_queue_row_says_why_held_its_tags_and_its_sla(
    client: TestClient,
    upstream: factories.UpstreamMock,
    api_key: str,
    agent: tuple[str, str],
    senior: tuple[str, str],
    clock: factories.ManualClock,
) -> None:
    review_id = ask(client, upstream, api_key, "Capital?", -0.2)
    token = console_login(client, *agent)
    client.post(
        f"/console/reviews/{review_id}/decide",
        data={"action": "escalate", "comment": "not sure", "tags": ["wrong-facts", "tone"], "csrftoken": token},
    )
    console_login(client, *senior)
    row = row_of(client.get("/console/?tier=senior").text, review_id)
    assert 'title="Unsure: 77% confident (agent tier reviews 30% to 92%)">Unsure, 77%<' in row
    assert "wrong-facts, tone" in row and "has the placeholder" in row  # its wait (0 s) ran out: what it was told
    assert 'class="sla-ok"' in row  # senior: 600 s
    clock.advance(460)
    assert 'class="sla-near"' in row_of(client.get("/console/?tier=senior").text, review_id)
    clock.advance(200)
    assert 'class="sla-over"' in row_of(client.get("/console/?tier=senior").text, review_id)


async def test_a_waiting_client_shows_with_its_seconds_left(
    app: FastAPI, aclient: httpx.AsyncClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str]
) -> None:
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "hitl": {"wait": 20}}
    asking = asyncio.create_task(
        aclient.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    )
    runtime: Runtime = app.state.runtime
    review = await factories.open_review(runtime)
    await factories.aconsole_login(aclient, *agent)
    row = row_of((await aclient.get("/console/?tier=agent")).text, review.id)
    left = int(re.search(r"data-deadline=\"\d+\">(\d+)</span>s", row)[1])  # type: ignore[index]
    assert "waiting" in row and 15 <= left <= 20
    await factories.decide_as(runtime, agent[0], review.id, factories.Action.APPROVE)
    assert (await asking).json()["hitl"]["status"] == "approved"


def test_the_review_page_reads_in_plain_words(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str]
) -> None:
    hitl = held(client, upstream, api_key, text="The capital is Lyon.")
    console_login(client, *agent)
    page = client.get(f"/console/reviews/{hitl['review_id']}").text
    assert re.search(r'<h1 class="question"[^>]*>Capital of France\?</h1>', page)
    assert "Unsure: 77% confident (agent tier reviews 30% to 92%)" in page
    assert "No word stands out: each of the 4 was at least 60% likely." in page
    assert "Overall confidence: 77%, from the word probabilities, by the default formula" in page
    assert "<summary>Raw figures</summary>" in page and "mean logprob -0.200" in page
    assert "seconds before" not in page and "the placeholder" in page


def test_deciding_opens_the_next_review_of_the_tier(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str]
) -> None:
    first, second = (ask(client, upstream, api_key, question, -0.2) for question in ("One?", "Two?"))
    token = console_login(client, *agent)
    client.get(f"/console/reviews/{first}")
    done = client.post(
        f"/console/reviews/{first}/decide", data={"action": "approve", "csrftoken": token}, follow_redirects=False
    )
    assert done.headers["location"] == f"/console/reviews/{second}?decided={first}"
    page = client.get(done.headers["location"]).text
    assert "Decision saved; here is the next one." in page and 'id="next-form"' in page
    last = client.post(
        f"/console/reviews/{second}/decide", data={"action": "approve", "csrftoken": token}, follow_redirects=False
    )
    assert last.headers["location"] == f"/console/?tier=agent&decided={second}&empty=1"


def test_a_canned_override_keeps_the_text_the_agent_sent(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str], database_url: str
) -> None:
    hitl = held(client, upstream, api_key)
    token = console_login(client, *agent)
    adapted = "Thanks for asking! A colleague will get back to you today."
    data = {"action": "override", "canned": "0", "text": adapted, "csrftoken": token}
    client.post(f"/console/reviews/{hitl['review_id']}/decide", data=data)
    with factories.sync_session(database_url) as session:
        exchange = session.get(Exchange, hitl["exchange_id"])
    assert exchange is not None and exchange.final_text == adapted and exchange.status == "overridden"


def exchange_with(reason: str, signals: dict[str, Any], confidence: float | None = 0.41, **extra: Any) -> Exchange:
    response = extra.pop("response", {"choices": [{"message": {"content": "x"}}]})
    return Exchange(
        request_id="r", api_key_id=1, model="m", upstream_model="m", request={}, response=response,
        signals=signals, confidence=confidence, policy_version="p", route="hold", reason=reason, status="held",
        **extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        ("confidence 0.412 in [0.3, 0.92) -> agent", "Unsure: 41% confident (agent tier reviews 30% to 92%)"),
        (
            "rule 'high-stakes' matched (metadata.stakes = high)",
            "Held by the rule “high-stakes” (metadata.stakes = high)",
        ),
        ("tool calls (issue_refund) matched no rule -> agent", "Wants to call issue_refund: no rule lets that through"),
        ("unscored (logprobs:not_returned, selfcheck:error:timeout)", "Could not be scored: the model sent no word"),
    ],
)
def test_why_held_in_words(reason: str, said: str) -> None:
    assert explanations.why_held(exchange_with(reason, {})).startswith(said)


def test_the_confidence_is_one_number_everywhere() -> None:
    """The routing reason keeps three decimals: 0.3654 is 37% in the header, the queue and the signals alike."""
    exchange = exchange_with("confidence 0.365 in [0.3, 0.92) -> agent", {}, confidence=0.3654)
    assert explanations.why_held(exchange).startswith("Unsure: 37% confident")
    assert explanations.why_held_briefly(exchange) == "Unsure, 37%"
    assert explanations.sentences(exchange)[-1].startswith("Overall confidence: 37%, ")


def test_signals_as_sentences() -> None:
    tokens = [factories.token(word, logprob, []) for word, logprob in (("Paris", -0.01), (" is", -1.2), (" big", -2.5))]
    response = {"choices": [{"message": {"content": "Paris is big"}, "logprobs": {"content": tokens}}]}
    signals = {
        "selfcheck": {"p_yes": 0.21},
        "consistency": {"score": 0.5, "samples": 4},
        "missing": ["selfcheck:no_yes_no_token"],
        "decided_by": "logprobs+consistency",
        "calibrated_on": "support-bot",
    }
    said = explanations.sentences(exchange_with("", signals, 0.41, response=response, calibrator="cal-3"))
    assert said == [
        "The model was unsure of 2 words of 3 (the least sure at 8%): they are marked in the answer.",
        "The self-check judged it likely wrong (P=0.21).",
        "Asked again 4 times, the model agreed with itself 50% of the time.",
        "Not measured: the self-check gave no yes or no.",
        "Overall calibrated confidence: 41%, from the word probabilities and the samples, calibrated by cal-3"
        " (fitted on support-bot's answers).",
    ]
    uncalibrated = {"decided_by": "logprobs+selfcheck+consistency"}
    assert explanations.sentences(exchange_with("", uncalibrated, 0.5))[-1] == (
        "Overall confidence: 50%, from the word probabilities, the self-check and the samples, by the default"
        " formula (no calibrator fitted yet)."
    )


def test_a_policy_sla_names_a_known_tier() -> None:
    text = policy.DEFAULT_POLICY.read_text().replace("  senior: 600", "  legal: 600")
    with pytest.raises(PolicyError, match="sla.legal: tier 'legal' is not in tiers"):
        policy.parse(text)
