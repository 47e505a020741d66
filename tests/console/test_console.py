"""The minimal console over its real routes: login, CSRF, queue, review page, decisions."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from console.rendering import make_templates
from tests import factories
from tests.factories import MODEL, TEMPLATES, console_login, csrf_token

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_every_template_compiles() -> None:
    env = make_templates().env  # the console's own environment, with its filters
    names = env.list_templates()
    assert {
        "base.html",
        "login.html",
        "queue.html",
        "review.html",
        "history.html",
        "partials/_queue.html",
        "partials/_signals.html",
        "partials/_candidate.html",
        "partials/_claim.html",
        "partials/_decide.html",
        "partials/_diff.html",
        "partials/_trail.html",
        "partials/_history_rows.html",
    } <= set(names)
    for name in names:
        env.get_template(name)


def test_partials_start_with_their_swap_target() -> None:
    for partial in (TEMPLATES / "partials").glob("_*.html"):
        assert partial.read_text().startswith("{# swap target: #"), partial.name


def test_pages_need_a_login(client: TestClient) -> None:
    response = client.get("/console/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/console/login")


def test_wrong_password_is_refused(client: TestClient, agent: tuple[str, str]) -> None:
    token = csrf_token(client.get("/console/login").text)
    response = client.post("/console/login", data={"username": "ada", "password": "nope", "csrftoken": token})
    assert response.status_code == 401 and "wrong password" in response.text
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_login_without_csrf_token_is_refused(client: TestClient, agent: tuple[str, str]) -> None:
    client.get("/console/login")
    response = client.post("/console/login", data={"username": agent[0], "password": agent[1]})
    assert response.status_code == 403


def test_next_parameter_cannot_leave_the_console(client: TestClient, agent: tuple[str, str]) -> None:
    token = csrf_token(client.get("/console/login").text)
    response = client.post(
        "/console/login",
        data={"username": agent[0], "password": agent[1], "csrftoken": token, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/console/"


def test_queue_review_page_and_edit(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    hitl = factories.held(client, upstream, api_key)
    token = console_login(client, *agent)
    queue = client.get("/console/?tier=agent")
    assert queue.status_code == 200 and queue.template.name == "queue.html"  # type: ignore[attr-defined]
    context = queue.context  # type: ignore[attr-defined]
    assert context["tier"] == "agent" and context["can_decide"] is True and context["counts"] == {"agent": 1}
    assert [row.review.id for row in context["rows"]] == [hitl["review_id"]]
    assert context["rows"][0].exchange.candidate_text == "Lyon." and "Lyon." in queue.text
    assert "HX-Request" in queue.headers["vary"]
    fragment = client.get("/console/?tier=agent", headers={"HX-Request": "true"})
    assert (
        fragment.text.lstrip().startswith("{#") is False
        and "<html" not in fragment.text
        and hitl["review_id"] in fragment.text
    )

    page = client.get(f"/console/reviews/{hitl['review_id']}")
    assert page.status_code == 200 and page.template.name == "review.html"  # type: ignore[attr-defined]
    context = page.context  # type: ignore[attr-defined]
    assert context["review"].id == hitl["review_id"] and context["held_by_me"] is True and context["holder"] is None
    assert context["can_decide"] is True and context["can_escalate"] is True and context["waiting"] == 0
    assert [token.text for token in context["tokens"]] == ["Lyon."]
    kinds = [event.kind for event in context["trail"]]
    assert kinds[0] == "held" and kinds[-1] == "claimed"  # "delivered" (the placeholder) lands off the request path
    for needle in (
        "Capital of France?",
        "Lyon.",
        "mean logprob",
        "min token prob",
        "mean top-k entropy",
        "confidence",
        "default-3@",
    ):
        assert needle in page.text, needle

    decided = client.post(
        f"/console/reviews/{hitl['review_id']}/decide",
        data={"action": "edit", "text": "Paris.", "csrftoken": token},
        follow_redirects=False,
    )
    assert decided.status_code == 303
    poll = client.get(f"/v1/reviews/{hitl['review_id']}", headers={"Authorization": f"Bearer {api_key}"}).json()
    assert poll["status"] == "edited" and poll["completion"]["choices"][0]["message"]["content"] == "Paris."
    assert hitl["review_id"] not in client.get("/console/?tier=agent").text

    again = client.post(f"/console/reviews/{hitl['review_id']}/decide", data={"action": "approve", "csrftoken": token})
    assert again.status_code == 409 and again.template.name == "review.html"  # type: ignore[attr-defined]
    assert "already been decided" in again.context["error"]  # type: ignore[attr-defined]
    assert "already been decided" in again.text


def test_decision_without_csrf_is_refused(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    hitl = factories.held(client, upstream, api_key)
    console_login(client, *agent)
    response = client.post(f"/console/reviews/{hitl['review_id']}/decide", data={"action": "approve"})
    assert response.status_code == 403
    poll = client.get(f"/v1/reviews/{hitl['review_id']}", headers={"Authorization": f"Bearer {api_key}"}).json()
    assert poll["status"] == "pending"


def test_agent_cannot_decide_senior_review_by_crafting_the_request(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    hitl = factories.held(client, upstream, api_key, metadata={"stakes": "high"})
    token = console_login(client, *agent)
    page = client.get(f"/console/reviews/{hitl['review_id']}")
    assert 'id="decide-form"' not in page.text
    response = client.post(
        f"/console/reviews/{hitl['review_id']}/decide", data={"action": "approve", "csrftoken": token}
    )
    assert response.status_code == 403


@pytest.mark.parametrize("where", ["question", "answer"])
def test_model_and_user_text_are_escaped(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], where: str
) -> None:
    upstream.answer(factories.completion_body(HOSTILE if where == "answer" else "ok", logprob=-0.2))
    question = HOSTILE if where == "question" else "hello"
    hitl = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": question}], "hitl": {"wait": 0}},
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()["hitl"]
    console_login(client, *agent)
    for page in (client.get("/console/?tier=agent"), client.get(f"/console/reviews/{hitl['review_id']}")):
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;" in page.text


def test_logout(client: TestClient, agent: tuple[str, str]) -> None:
    token = console_login(client, *agent)
    assert client.get("/console/").status_code == 200
    client.post("/console/logout", data={"csrftoken": token})
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_static_htmx_is_served(client: TestClient) -> None:
    response = client.get("/console/static/htmx-2.0.11.min.js")
    assert response.status_code == 200 and "htmx" in response.text[:200]
