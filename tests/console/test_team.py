"""Team work over the console's real routes: a team lead assigns reviews (one or a filtered set), reassigns and
takes them back; an agent sees its own, takes reviews for itself, and "next" takes its own first and never
someone else's; bulk approval shows what will be released before it does; the queue shows each agent's
progress today. Every change goes through the review desk and into the review's audit trail."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import col, select

from gateway.models import Decision, EventKind, Review, ReviewEvent, Role
from tests import factories
from tests.factories import MODEL, console_login, tool_call


def hold(client: TestClient, upstream: factories.UpstreamMock, key: str, question: str, **answer: object) -> str:
    text = answer.pop("text", "Lyon.")
    upstream.answer(factories.completion_body(text, logprob=-0.2, **answer))  # type: ignore[arg-type]
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "hitl": {"wait": 0}}
    reply = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    return str(reply.json()["hitl"]["review_id"])


def bulk(client: TestClient, token: str, do: str, ids: list[str], **extra: str) -> object:
    data = {"csrftoken": token, "do": do, "review_id": ids, "back": "/console/?tier=agent", **extra}
    return client.post("/console/bulk", data=data, follow_redirects=False)


def trail(url: str, review_id: str) -> list[dict]:
    with factories.sync_session(url) as session:
        found = session.exec(
            select(ReviewEvent).where(ReviewEvent.review_id == review_id, ReviewEvent.kind == EventKind.ASSIGNED)
        ).all()
    return [event.detail for event in found]


def test_a_lead_assigns_reassigns_and_the_agent_works_its_own_first(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent, senior, database_url: str
) -> None:
    factories.make_agent(database_url, "bob", "bob password 1", Role.AGENT)
    first, second, third = (hold(client, upstream, api_key, q) for q in ("One?", "Two?", "Three?"))
    token = console_login(client, *senior)
    done = bulk(client, token, "assign", [second, third], to=agent[0])
    assert done.status_code == 303 and done.headers["location"] == "/console/?tier=agent&assigned=2"
    assert trail(database_url, second) == [{"to": agent[0], "from": None}]

    reassigned = bulk(client, token, "assign", [third], to="bob")
    assert reassigned.status_code == 303
    assert trail(database_url, third) == [{"to": agent[0], "from": None}, {"to": "bob", "from": agent[0]}]

    console_login(client, *agent)
    mine = client.get("/console/?mine=true").text
    assert f'id="review-{second}"' in mine and f'id="review-{third}"' not in mine and f'id="review-{first}"' not in mine
    assert 'data-tier="mine">mine <span class="count">1</span>' in mine
    token = console_login(client, *agent)
    taken = client.post("/console/next", data={"csrftoken": token, "tier": "agent"}, follow_redirects=False)
    assert taken.headers["location"] == f"/console/reviews/{second}"  # its own before the older unassigned one
    client.post(f"/console/reviews/{second}/release", data={"csrftoken": token})

    bob = TestClient(client.app)
    bob_token = console_login(bob, "bob", "bob password 1")
    order: list[str] = []
    for _ in range(3):  # "n" on each review page: skip the one open
        skip = {"skip": order[-1].rsplit("/", 1)[1]} if order else {}
        data = {"csrftoken": bob_token, "tier": "agent", **skip}
        went = bob.post("/console/next", data=data, follow_redirects=False)
        order.append(went.headers["location"])
    # His own first, then the older unassigned one, then round again: never ada's second.
    assert order == [f"/console/reviews/{third}", f"/console/reviews/{first}", f"/console/reviews/{third}"]

    lead = console_login(client, *senior)
    assert bulk(client, lead, "unassign", [third]).status_code == 303
    assert trail(database_url, third)[-1] == {"to": None, "from": "bob"}


def test_who_may_assign_what(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent, senior, database_url: str
) -> None:
    review = hold(client, upstream, api_key, "One?")
    upstream.answer(factories.completion_body("Lyon.", logprob=-1.5))
    hard = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hard?"}], "hitl": {"wait": 0}},
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()["hitl"]["review_id"]
    token = console_login(client, *agent)
    refused = bulk(client, token, "assign", [review], to=senior[0])
    assert refused.status_code == 403 and "Agents take reviews for themselves" in refused.text
    assert bulk(client, token, "take", [review]).status_code == 303
    assert trail(database_url, review) == [{"to": agent[0], "from": None}]
    assert bulk(client, token, "take", [hard]).status_code == 403  # a senior-tier review

    lead = console_login(client, *senior)
    assert (
        "cannot decide reviews of the &#39;senior&#39; tier" in bulk(client, lead, "assign", [hard], to=agent[0]).text
    )
    assert bulk(client, lead, "assign", [review], to="nobody").status_code == 404
    assert bulk(client, lead, "assign", []).status_code == 400
    assert bulk(client, lead, "assign", [review]).status_code == 400  # to whom?
    assert bulk(client, lead, "assign", ["rev-" + "0" * 32], to=agent[0]).status_code == 404
    with factories.sync_session(database_url) as session:
        assert session.get(Review, hard).assigned_to is None  # type: ignore[union-attr]


def test_bulk_approval_shows_what_it_releases_then_releases_it(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent, database_url: str
) -> None:
    plain = [hold(client, upstream, api_key, q, text=f"Answer {q}") for q in ("One?", "Two?")]
    call = tool_call("issue_refund", '{"order_id": "42", "amount": ')  # malformed: unscored, the agent tier
    calls = hold(client, upstream, api_key, "Refund?", text=None, tool_calls=[call])
    token = console_login(client, *agent)
    page = bulk(client, token, "approve", [*plain, calls])
    assert page.status_code == 200  # a confirmation, nothing decided yet
    text = page.text  # type: ignore[attr-defined]
    assert "Answer One?" in text and "Answer Two?" in text and "Approve 2 answers" in text
    assert "Left out: it calls tools: decide it on its own page." in text
    with factories.sync_session(database_url) as session:
        assert session.exec(select(Decision)).all() == []
    confirmed = factories.csrf_token(text)
    done = client.post(
        "/console/bulk/approve",
        data={"csrftoken": confirmed, "review_id": plain, "back": "/console/?tier=agent"},
        follow_redirects=False,
    )
    assert done.headers["location"] == "/console/?tier=agent&approved=2"
    auth = {"Authorization": f"Bearer {api_key}"}
    for review_id in plain:
        assert client.get(f"/v1/reviews/{review_id}", headers=auth).json()["status"] == "approved"
    assert client.get(f"/v1/reviews/{calls}", headers=auth).json()["status"] == "pending"
    with factories.sync_session(database_url) as session:
        decisions = session.exec(select(Decision).order_by(col(Decision.id))).all()
    assert [(d.review_id, d.action) for d in decisions] == [(plain[0], "approve"), (plain[1], "approve")]
    again = client.post("/console/bulk/approve", data={"csrftoken": confirmed, "review_id": [calls]})
    assert again.status_code == 400 and "it calls tools" in again.text

    queue = client.get("/console/?tier=agent").text
    assert f'<span class="me">{agent[0]} 2</span>' in queue


def test_bulk_approval_leaves_out_a_review_someone_else_has_open_and_says_so(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent, senior, database_url: str
) -> None:
    first, taken, last = (hold(client, upstream, api_key, q, text=f"Answer {q}") for q in ("One?", "Two?", "Three?"))
    token = console_login(client, *agent)
    page = bulk(client, token, "approve", [first, taken, last]).text  # type: ignore[attr-defined]
    assert "Approve 3 answers" in page
    confirmed = factories.csrf_token(page)
    factories.claimed_by(database_url, taken, senior[0])  # meanwhile the senior opens one of them
    shown_again = bulk(client, token, "approve", [first, taken, last]).text  # type: ignore[attr-defined]
    assert f"Left out: {senior[0]} has it open." in shown_again and "Approve 2 answers" in shown_again
    # The confirmation the agent had on screen still named all three: two go, one is left out, not a 409.
    done = client.post(
        "/console/bulk/approve",
        data={"csrftoken": confirmed, "review_id": [first, taken, last], "back": "/console/?tier=agent"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/?tier=agent&approved=2&left_out=1"
    assert "1 left out: someone else had them open" in client.get(done.headers["location"]).text
    with factories.sync_session(database_url) as session:
        decided = {d.review_id for d in session.exec(select(Decision)).all()}
    assert decided == {first, last}


def test_nothing_selected_is_a_clear_error(client: TestClient, agent) -> None:
    token = console_login(client, *agent)
    refused = client.post("/console/bulk", data={"csrftoken": token, "do": "approve"})
    assert refused.status_code == 400 and "Select at least one review first." in refused.text
