"""The gateway is killed while real OpenAI SDK clients wait on held answers; the SDK retries against the
restarted gateway, every retry joins its review (none is made twice), and each client gets its decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from gateway.models import EventKind, Exchange, Review, ReviewEvent, ReviewStatus, Role
from tests import factories

CLIENTS = 10
pytestmark = pytest.mark.slow


def count(url: str, query: Any) -> int:
    with factories.sync_session(url) as session:
        return len(session.exec(query).all())


def test_sdk_clients_retry_into_their_reviews_after_a_kill(
    database_url: str, unsure_upstream: str, tmp_path: Path
) -> None:
    key = factories.make_api_key(database_url)
    factories.make_agent(database_url, "grace", "battery staple", Role.ADMIN)
    env = factories.gateway_env(database_url, unsure_upstream)
    port = factories.free_port()
    log = tmp_path / "gateway.log"
    answers: dict[int, Any] = {}

    first = factories.GatewayProcess(env, port, log)
    try:
        # The SDK's own retry policy: connection errors are retried with backoff (0.5 s doubling, capped 8 s).
        threads = factories.sdk_clients(first.base, key, CLIENTS, answers, max_retries=6)
        factories.until(lambda: count(database_url, select(Review)) == CLIENTS, 30, "every client's review")
        first.kill()  # the waiting clients' connections drop; the SDK retries
    finally:
        first.stop()

    second = factories.GatewayProcess(env, port, log)
    try:
        retried = select(ReviewEvent).where(col(ReviewEvent.kind) == EventKind.RETRIED)
        factories.until(lambda: count(database_url, retried) >= CLIENTS, 60, "every client's retry to join its review")
        with factories.sync_session(database_url) as session:
            reviews = session.exec(select(Review)).all()
            joined = {event.review_id for event in session.exec(retried).all()}
        assert {review.id for review in reviews} == joined and all(r.status == ReviewStatus.OPEN for r in reviews)

        with httpx.Client(base_url=second.base, timeout=30) as console:
            token = factories.csrf_token(console.get("/console/login").text)
            login = {"username": "grace", "password": "battery staple", "csrftoken": token, "next": "/console/"}
            assert console.post("/console/login", data=login).status_code == 303
            for review in reviews:
                decision = {"action": "edit", "text": f"Paris, for {review.id}.", "csrftoken": token}
                assert console.post(f"/console/reviews/{review.id}/decide", data=decision).status_code == 303
        for thread in threads:
            thread.join(30)
    finally:
        second.stop()

    assert not [thread for thread in threads if thread.is_alive()]
    failures = {number: answer for number, answer in answers.items() if isinstance(answer, Exception)}
    assert not failures, failures
    assert count(database_url, select(Review)) == CLIENTS and count(database_url, select(Exchange)) == CLIENTS
    for answer in answers.values():
        hitl = answer.model_extra["hitl"]
        assert hitl["status"] == "edited"
        assert answer.choices[0].message.content == f"Paris, for {hitl['review_id']}."
