"""Approved answers served again (the policy's `reuse:`): for the same normalized conversation, model, tools
and structured-output schema, from the same key or a group the policy names, while the answer is active, and
only in place of a fresh candidate that is not confident on its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway import policy
from gateway.app import create_app
from gateway.models import ApprovedAnswer, Exchange, Review, ReviewKind
from gateway.settings import AuditSettings, Settings, UpstreamSettings
from tests import factories
from tests.factories import MODEL, UPSTREAM, console_login

OTHER_MODEL = "support-bot-large"
QUESTION = [{"role": "user", "content": "Capital of France?"}]
TOOL = {"type": "function", "function": {"name": "lookup", "description": "Look a city up.", "parameters": {}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}


def reuse_policy(tmp_path: Path, share: str = "") -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy.DEFAULT_POLICY.read_text() + f"\nreuse: {{{share}}}\n")
    return path


@pytest.fixture
def gateway(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[..., TestClient]:
    def make(share: str = "", **overrides: Any) -> TestClient:
        upstreams = [
            UpstreamSettings(name=MODEL, model="gpt-4o-mini", api_base=UPSTREAM, api_key="sk-upstream"),
            UpstreamSettings(name=OTHER_MODEL, model="gpt-4o", api_base=UPSTREAM, api_key="sk-upstream"),
        ]
        settings = make_settings(policy_path=reuse_policy(tmp_path, share), upstreams=upstreams, **overrides)
        return TestClient(create_app(settings))

    return make


def ask(client: TestClient, key: str, *, sure: bool = False, **extra: Any) -> Any:
    """The question, with a fresh candidate the model is unsure of (held on its own) unless `sure`."""
    return client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": QUESTION, "hitl": {"wait": 0}, **extra},
        headers={"Authorization": f"Bearer {key}"},
    )


def approve_with_edit(client: TestClient, agent: tuple[str, str], review_id: str, text: str = "Paris.") -> None:
    token = console_login(client, *agent)
    decided = client.post(
        f"/console/reviews/{review_id}/decide",
        data={"action": "edit", "text": text, "csrftoken": token},
        follow_redirects=False,
    )
    assert decided.status_code == 303, decided.text


def held_then_edited(client: TestClient, upstream: factories.UpstreamMock, key: str, agent, **extra: Any) -> str:
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
    first = ask(client, key, **extra).json()["hitl"]
    assert first["status"] == "pending"
    approve_with_edit(client, agent, first["review_id"])
    return str(first["review_id"])


def test_the_agents_answer_is_served_again_instead_of_an_unsure_candidate(
    gateway, upstream: factories.UpstreamMock, api_key: str, agent, database_url: str
) -> None:
    with gateway() as client:
        review_id = held_then_edited(client, upstream, api_key, agent)
        again = ask(client, api_key)
        assert again.status_code == 200
        body = again.json()
        assert body["choices"][0]["message"]["content"] == "Paris."
        assert body["hitl"]["status"] == "reused" and body["hitl"]["reused_from"] == review_id
        assert again.headers["x-hitl-status"] == "reused" and again.headers["x-hitl-reused-from"] == review_id
        page = client.get(f"/console/reviews/{review_id}").text
        assert "It is <strong>active</strong>; served 1 time." in page
    with factories.sync_session(database_url) as session:
        exchange = session.exec(select(Exchange).where(Exchange.id == body["hitl"]["exchange_id"])).one()
        answer = session.exec(select(ApprovedAnswer)).one()
    assert exchange.status == "reused" and exchange.route == "release" and exchange.candidate_text == "Paris."
    assert exchange.signals["reused"]["review_id"] == review_id
    assert "reused the answer approved in review" in str(exchange.reason)
    assert answer.uses == 1


def test_a_confident_candidate_is_its_own_answer(
    gateway, upstream: factories.UpstreamMock, api_key: str, agent
) -> None:
    with gateway() as client:
        held_then_edited(client, upstream, api_key, agent)
        upstream.answer(factories.completion_body("Paris is the capital of France."))  # sure: released itself
        body = ask(client, api_key).json()
    assert body["hitl"]["status"] == "released" and "Paris is the capital" in body["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("why", "extra"),
    [
        ("another model", {"model": OTHER_MODEL}),
        ("other tools", {"tools": [TOOL]}),
        ("another schema", {"response_format": SCHEMA}),
        ("another question", {"messages": [{"role": "user", "content": "Capital of Spain?"}]}),
        ("a rule holds it", {"metadata": {"stakes": "high"}}),
    ],
)
def test_reuse_is_refused_for_anything_but_the_same_request(
    gateway, upstream: factories.UpstreamMock, api_key: str, agent, why: str, extra: dict
) -> None:
    with gateway() as client:
        held_then_edited(client, upstream, api_key, agent)
        upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
        body = ask(client, api_key, **extra).json()
    assert body["hitl"]["status"] == "pending", why


def test_reuse_stays_within_the_key_unless_the_policy_shares_it(
    gateway, upstream: factories.UpstreamMock, api_key: str, agent, database_url: str
) -> None:
    web = factories.make_api_key(database_url, "web")
    mobile = factories.make_api_key(database_url, "mobile")
    with gateway() as client:
        held_then_edited(client, upstream, web, agent)
        upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
        assert ask(client, mobile).json()["hitl"]["status"] == "pending"  # another app's customers
    with gateway(share="share: [[web, mobile]]") as client:
        assert ask(client, mobile).json()["hitl"]["status"] == "reused"  # one team's two apps
        assert ask(client, api_key).json()["hitl"]["status"] == "pending"  # a key outside the group


def test_a_paused_answer_is_not_served_and_a_retired_one_never_again(
    gateway, upstream: factories.UpstreamMock, api_key: str, agent
) -> None:
    with gateway() as client:
        review_id = held_then_edited(client, upstream, api_key, agent)
        token = factories.csrf_token(client.get(f"/console/reviews/{review_id}").text)

        def set_status(status: str) -> int:
            answered = client.post(
                f"/console/reviews/{review_id}/answer",
                data={"status": status, "csrftoken": token},
                follow_redirects=False,
            )
            return answered.status_code

        assert set_status("paused") == 303
        upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
        assert ask(client, api_key).json()["hitl"]["status"] == "pending"
        assert set_status("active") == 303
        assert ask(client, api_key).json()["hitl"]["status"] == "reused"
        assert set_status("retired") == 303
        assert ask(client, api_key).json()["hitl"]["status"] == "pending"
        assert set_status("active") == 400  # retired for good
        assert set_status("forever") == 400


def test_without_reuse_in_the_policy_nothing_is_served_again(
    make_settings, upstream: factories.UpstreamMock, api_key: str, agent
) -> None:
    with TestClient(create_app(make_settings())) as client:
        held_then_edited(client, upstream, api_key, agent)
        upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
        assert ask(client, api_key).json()["hitl"]["status"] == "pending"


def test_a_reused_answer_is_drawn_for_audit_like_any_release(
    gateway, upstream: factories.UpstreamMock, api_key: str, agent, database_url: str
) -> None:
    with gateway() as client:
        held_then_edited(client, upstream, api_key, agent)
    with gateway(audit=AuditSettings(rate=1.0)) as client:
        upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
        body = ask(client, api_key).json()
    assert body["hitl"]["status"] == "reused"
    with factories.sync_session(database_url) as session:
        audit = session.exec(select(Review).where(Review.exchange_id == body["hitl"]["exchange_id"])).one()
    assert audit.kind == ReviewKind.AUDIT


def test_tool_calls_are_never_remembered(
    gateway, upstream: factories.UpstreamMock, api_key: str, agent, database_url: str
) -> None:
    call = factories.tool_call("issue_refund", {"amount": 10})
    upstream.answer(factories.completion_body(None, logprob=None, tool_calls=[call]))
    refund = {"type": "function", "function": {"name": "issue_refund", "parameters": {"type": "object"}}}
    with gateway() as client:
        first = ask(client, api_key, tools=[refund]).json()["hitl"]
        token = console_login(client, *agent)
        decided = client.post(
            f"/console/reviews/{first['review_id']}/decide",
            data={"action": "approve", "csrftoken": token},
            follow_redirects=False,
        )
        assert decided.status_code == 303
    with factories.sync_session(database_url) as session:
        assert session.exec(select(ApprovedAnswer)).all() == []


def test_an_open_review_shows_the_active_approved_answer_as_a_draft(
    gateway, upstream: factories.UpstreamMock, api_key: str, agent
) -> None:
    """Two customers asked the same meanwhile: once the first is answered, the second's review offers it."""
    with gateway() as client:
        upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
        first = ask(client, api_key).json()["hitl"]
        second = ask(client, api_key).json()["hitl"]
        assert (first["status"], second["status"]) == ("pending", "pending")
        approve_with_edit(client, agent, first["review_id"], "Paris, since 508.")
        page = client.get(f"/console/reviews/{second['review_id']}").text
        own = client.get(f"/console/reviews/{first['review_id']}").text
    offered = page.split('class="approved-answer"')[1].split("</div>")[0]
    assert "The active approved answer" in offered and "Paris, since 508." in offered
    assert 'data-draft="Paris, since 508."' in offered
    assert 'class="approved-answer"' not in own  # its own review is not offered to itself


def test_without_reuse_no_approved_answer_is_offered(
    make_settings, upstream: factories.UpstreamMock, api_key: str, agent
) -> None:
    with TestClient(create_app(make_settings())) as client:
        upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
        first = ask(client, api_key).json()["hitl"]
        second = ask(client, api_key).json()["hitl"]
        approve_with_edit(client, agent, first["review_id"])
        assert 'class="approved-answer"' not in client.get(f"/console/reviews/{second['review_id']}").text
