"""No dialect, mode or path lets an unreviewed answer out. Every route the API serves is walked (a new one fails
this test until it is classified here), each answer-giving route in every mode it has (plain, streamed, background,
retrieved, polled) with an upstream whose answer the policy holds: the candidate's words are in no byte any client
gets. Any other path under /v1 is a 404 in its dialect's shape, and the upstream is never called for it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.api import served
from tests import factories
from tests.factories import MODEL

SECRET = "Lyon-unreviewed-candidate"
UNSURE = factories.completion_body(f"{SECRET} is the capital of France.", logprob=-1.5)
QUESTION = "Capital of France?"

# What each served route is: how it is called to try to get an answer out of it, or why it gives none.
ANSWERS = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/messages"),
}
READS_AN_ANSWER = {
    ("GET", "/v1/reviews/{review_id}"),
    ("GET", "/v1/responses/{response_id}"),
    ("POST", "/v1/responses/{response_id}/cancel"),
}
NO_ANSWER = {
    ("GET", "/v1/models"),  # model cards
    ("GET", "/v1/models/{model:path}"),
    ("GET", "/admin/exports/{format_name}"),  # decided training data, export keys only
    ("GET", "/admin/insights/summary"),  # counts, never an answer's text; insights keys only
    ("GET", "/admin/insights/series"),  # counts and latencies per hour or day; insights keys only
    ("GET", "/admin/insights/agreement"),  # per-agent and per-pair agreement counts; insights keys only
    ("GET", "/admin/insights/loop"),  # weekly rates and versions; insights keys only
    ("GET", "/admin/insights/reviewers"),  # per-agent rates and flags; insights keys only
    ("GET", "/admin/insights/drift"),  # per-band rates; insights keys only
    ("GET", "/admin/insights/threshold"),  # a simulation over the history's confidences; insights keys only
}
BODIES: dict[str, list[dict[str, Any]]] = {
    "/v1/chat/completions": [
        {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]},
        {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "stream": True},
    ],
    "/v1/responses": [
        {"model": MODEL, "input": QUESTION},
        {"model": MODEL, "input": QUESTION, "stream": True},
        {"model": MODEL, "input": QUESTION, "background": True},
    ],
    "/v1/messages": [
        {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": QUESTION}]},
        {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": QUESTION}], "stream": True},
    ],
}


def test_every_served_route_is_classified() -> None:
    found = {(method, route.path) for route in served.routes() for method in route.methods or ()}
    assert found == ANSWERS | READS_AN_ANSWER | NO_ANSWER


@pytest.mark.parametrize("path", sorted(BODIES))
def test_no_held_candidate_leaves_by_any_mode(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, path: str, database_url: str
) -> None:
    upstream.answer(UNSURE)
    auth = {"Authorization": f"Bearer {api_key}", "x-hitl-wait": "0"}
    seen: list[str] = []
    for body in BODIES[path]:
        answer = client.post(path, json=body, headers=auth)
        assert answer.status_code == 200, answer.text
        seen.append(answer.text + str(answer.headers))
        review_id = answer.headers.get("x-hitl-review-id")
        exchange_id = answer.headers["x-hitl-exchange-id"]
        if review_id is None:  # background: queued, its review comes once it is scored
            factories.until(lambda: len(factories.open_reviews(database_url)) >= 1, 10, "the background hold")
        for read in reads(exchange_id, review_id, path):
            got = client.request(read[0], read[1], headers=auth)
            seen.append(got.text + str(got.headers))
        time.sleep(0.05)
    assert upstream.chat.call_count == len(BODIES[path])  # every mode asked, and was held
    assert not [text for text in seen if SECRET in text]


def reads(exchange_id: str, review_id: str | None, path: str) -> list[tuple[str, str]]:
    """Every way to read back what was held: the review poll, and a response's retrieve (plain and cancelled)."""
    found = [("GET", f"/v1/reviews/{review_id}")] if review_id else []
    if path == "/v1/responses":
        response_id = "resp_" + exchange_id.split("-", 1)[1]
        found += [("GET", f"/v1/responses/{response_id}"), ("POST", f"/v1/responses/{response_id}/cancel")]
        found += [("GET", f"/v1/responses/{response_id}")]
    return found


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/completions", "openai"),
        ("/v1/embeddings", "openai"),
        ("/v1/responses/resp_x/input_items", "openai"),
        ("/v1/messages/count_tokens", "anthropic"),
        ("/v1/messages/batches", "anthropic"),
        ("/v1/chat/completions/x", "openai"),
    ],
)
def test_any_other_path_is_a_404_in_its_dialects_shape(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, path: str, shape: str
) -> None:
    upstream.answer(UNSURE)
    got = client.post(path, json={"model": MODEL, "input": QUESTION}, headers={"x-api-key": api_key})
    assert got.status_code == 404
    error = got.json()["error"]
    assert (got.json().get("type") == "error") == (shape == "anthropic")
    assert "POST /v1/responses" in error["message"] and "POST /v1/messages" in error["message"]
    assert not upstream.chat.called
