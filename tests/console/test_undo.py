"""The undo window: a console decision is checked at once, made when its window closes (the client answered
then), and can be taken back before that with nothing sent; the trail records both."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.app import create_app
from gateway.models import Decision, EventKind, PendingDecision, Review, ReviewEvent
from gateway.review.sandbox import TooSlow
from tests import factories
from tests.factories import MODEL, console_login, held

WINDOW = 1.5


@pytest.fixture
def undoable(make_settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(undo_seconds=WINDOW))) as client:
        yield client


def status(client: TestClient, key: str, review_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/reviews/{review_id}", headers={"Authorization": f"Bearer {key}"}).json())


def test_a_decision_is_sent_when_its_window_closes(
    undoable: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], database_url: str
) -> None:
    review_id = held(undoable, upstream, api_key)["review_id"]
    token = console_login(undoable, *agent)
    data = {"action": "edit", "text": "Paris.", "csrftoken": token}
    done = undoable.post(f"/console/reviews/{review_id}/decide", data=data, follow_redirects=False)
    assert done.headers["location"] == f"/console/?tier=agent&decided={review_id}&undo={review_id}&empty=1"
    assert f'action="/console/reviews/{review_id}/undo"' in undoable.get(done.headers["location"]).text
    assert status(undoable, api_key, review_id)["status"] == "pending"  # not yet: the window is open
    factories.until(lambda: status(undoable, api_key, review_id)["status"] == "edited", 10, "the decision")
    assert status(undoable, api_key, review_id)["completion"]["choices"][0]["message"]["content"] == "Paris."
    with factories.sync_session(database_url) as session:
        assert session.exec(select(PendingDecision)).all() == []
        (decision,) = session.exec(select(Decision)).all()
    assert decision.action == "edit" and decision.text == "Paris."
    late = undoable.post(f"/console/reviews/{review_id}/undo", data={"csrftoken": token})
    assert late.status_code == 409 and "Too late to undo" in late.text
    untouched = held(undoable, upstream, api_key)["review_id"]
    nothing = undoable.post(f"/console/reviews/{untouched}/undo", data={"csrftoken": token})
    assert nothing.status_code == 409 and "There is no decision of yours on this review to undo." in nothing.text


def test_an_undo_sends_nothing_and_gives_the_draft_back(
    undoable: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], database_url: str
) -> None:
    review_id = held(undoable, upstream, api_key)["review_id"]
    token = console_login(undoable, *agent)
    data = {"action": "override", "text": "We will call you back today.", "csrftoken": token}
    undoable.post(f"/console/reviews/{review_id}/decide", data=data, follow_redirects=False)
    taken = undoable.post(f"/console/reviews/{review_id}/undo", data={"csrftoken": token})
    assert taken.status_code == 200 and "Your override was taken back: nothing was sent." in taken.text
    assert taken.context["draft"] == "We will call you back today."  # type: ignore[attr-defined]
    time.sleep(WINDOW + 1)  # past the window: still nothing sent, nothing decided
    assert status(undoable, api_key, review_id)["status"] == "pending"
    with factories.sync_session(database_url) as session:
        assert session.exec(select(Decision)).all() == [] and session.exec(select(PendingDecision)).all() == []
        kinds = [event.kind for event in session.exec(select(ReviewEvent).where(ReviewEvent.review_id == review_id))]
    assert EventKind.UNDONE in kinds and EventKind.DECIDED not in kinds
    # Decided again, it goes out as any decision does.
    undoable.post(f"/console/reviews/{review_id}/decide", data={**data, "text": "Paris."}, follow_redirects=False)
    factories.until(lambda: status(undoable, api_key, review_id)["status"] == "overridden", 10, "the decision")


def test_a_bad_decision_is_refused_at_once_not_when_the_window_closes(
    undoable: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], database_url: str
) -> None:
    review_id = held(undoable, upstream, api_key)["review_id"]
    token = console_login(undoable, *agent)
    refused = undoable.post(
        f"/console/reviews/{review_id}/decide", data={"action": "approve", "text": "Paris.", "csrftoken": token}
    )
    assert refused.status_code == 400 and "would throw away" in refused.text
    with factories.sync_session(database_url) as session:
        assert session.exec(select(PendingDecision)).all() == []


async def test_a_client_whose_deadline_falls_in_the_window_is_answered_at_once(
    make_settings: Any, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    """Waiting clients first: a window that would outlast the client's wait is not given."""
    app = create_app(make_settings(undo_seconds=3600))
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "hitl": {"wait": 20}}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            waiting = asyncio.ensure_future(
                client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
            )
            runtime = app.state.runtime
            for _ in range(200):
                if factories.open_reviews(runtime.settings.database_url):
                    break
                await asyncio.sleep(0.05)
            (review_id,) = factories.open_reviews(runtime.settings.database_url)
            token = await factories.aconsole_login(client, *agent)
            data = {"action": "edit", "text": "Paris.", "csrftoken": token}
            done = await client.post(f"/console/reviews/{review_id}/decide", data=data)
            assert done.status_code == 303 and "undo=" not in done.headers["location"]
            answered = await waiting
    assert answered.json()["choices"][0]["message"]["content"] == "Paris."


def test_settling_is_done_by_any_process(
    make_settings: Any, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], database_url: str
) -> None:
    """A decision kept for its window is made even when the process that kept it is gone."""
    with TestClient(create_app(make_settings(undo_seconds=WINDOW))) as first:
        review_id = held(first, upstream, api_key)["review_id"]
        token = console_login(first, *agent)
        first.post(
            f"/console/reviews/{review_id}/decide", data={"action": "approve", "text": "Lyon.", "csrftoken": token}
        )
    # That process stopped within the window; another starts and makes the decision.
    with TestClient(create_app(make_settings(undo_seconds=WINDOW))) as second:
        factories.until(lambda: status(second, api_key, review_id)["status"] == "approved", 10, "the decision")


def test_an_escalation_has_its_undo_window_too(
    undoable: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], database_url: str
) -> None:
    review_id = held(undoable, upstream, api_key)["review_id"]
    token = console_login(undoable, *agent)
    data = {"action": "escalate", "comment": "Is this a refund case?", "csrftoken": token}
    done = undoable.post(f"/console/reviews/{review_id}/decide", data=data, follow_redirects=False)
    assert "undo=" in done.headers["location"]
    taken = undoable.post(f"/console/reviews/{review_id}/undo", data={"csrftoken": token})
    assert 'value="Is this a refund case?"' in taken.text  # the reason comes back with the rest
    with factories.sync_session(database_url) as session:
        assert session.get(Review, review_id).tier == "agent"  # type: ignore[union-attr]
    undoable.post(f"/console/reviews/{review_id}/decide", data=data, follow_redirects=False)

    def moved() -> bool:
        with factories.sync_session(database_url) as session:
            return session.get(Review, review_id).tier == "senior"  # type: ignore[union-attr]

    factories.until(moved, 10, "the escalation")
    with factories.sync_session(database_url) as session:
        (decision,) = session.exec(select(Decision)).all()
    assert decision.action == "escalate" and decision.comment == "Is this a refund case?"


def test_only_the_agent_who_decided_can_undo_and_nobody_decides_over_a_pending_decision(
    undoable: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], senior
) -> None:
    review_id = held(undoable, upstream, api_key)["review_id"]
    token = console_login(undoable, *agent)
    data = {"action": "edit", "text": "Paris.", "csrftoken": token}
    undoable.post(f"/console/reviews/{review_id}/decide", data=data, follow_redirects=False)
    undoable.cookies.clear()
    senior_token = console_login(undoable, *senior)  # another agent, in the same running app
    refused = undoable.post(f"/console/reviews/{review_id}/undo", data={"csrftoken": senior_token})
    assert refused.status_code == 409 and "Only the agent who made this decision can undo it." in refused.text
    assert 'id="pending-other"' in refused.text and 'id="undo-form"' not in refused.text
    over = undoable.post(f"/console/reviews/{review_id}/decide", data={"action": "approve", "csrftoken": senior_token})
    assert over.status_code == 409  # the review is held by the agent until its decision is made
    factories.until(lambda: status(undoable, api_key, review_id)["status"] == "edited", 10, "the decision")


def test_a_decision_whose_check_runs_out_of_time_when_made_is_tried_again_not_lost(
    undoable: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str], database_url: str
) -> None:
    """On a loaded machine the schema check may run past its limit when the window closes: the decision stands."""
    runtime = undoable.app.state.runtime  # type: ignore[attr-defined]
    desk = runtime.desk
    made = desk._make
    failures = []

    async def slow_once(*args: Any) -> Any:
        if not failures:
            failures.append(1)
            raise TooSlow("Checking the arguments took longer than 2 s and was stopped, so nothing was sent.")
        return await made(*args)

    object.__setattr__(desk, "_make", slow_once)  # the desk is a frozen dataclass
    review_id = held(undoable, upstream, api_key)["review_id"]
    token = console_login(undoable, *agent)
    undoable.post(f"/console/reviews/{review_id}/decide", data={"action": "edit", "text": "Paris.", "csrftoken": token})
    factories.until(lambda: status(undoable, api_key, review_id)["status"] == "edited", 15, "the decision, again")
    assert failures == [1]
