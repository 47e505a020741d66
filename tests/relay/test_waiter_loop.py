"""One waiter loop per process: waiting requests never poll; one batched poll per process, PostgreSQL notices
for decisions made elsewhere (re-listened after a lost connection, and backed by the poll), and every waiting
client answered when the process shuts down."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import sqlalchemy
from fastapi import FastAPI
from sqlalchemy import event
from sqlmodel import select

from gateway import db
from gateway.app import create_app
from gateway.holds import HoldHub
from gateway.models import Action, Review
from gateway.runtime import Runtime
from gateway.settings import HoldSettings, Settings
from tests import factories
from tests.factories import MODEL

UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)
on_postgres = pytest.mark.skipif(
    not os.environ.get("HITL_TEST_DATABASE_URL"), reason="PostgreSQL notices (HITL_TEST_DATABASE_URL)"
)


def question(number: int, wait: float = 20) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"Question {number}?"}], "hitl": {"wait": wait}}


@pytest.fixture
async def served(
    make_settings: Callable[..., Settings], upstream: factories.UpstreamMock, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with the poll interval the test asks for (`@pytest.mark.parametrize("served", [s], indirect=True)`)."""
    interval = getattr(request, "param", 0.2)
    app = create_app(make_settings(hold=HoldSettings(default_wait=20, max_wait=60, poll_interval=interval)))
    upstream.answer(UNSURE)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            yield app, client


async def held(runtime: Runtime, client: httpx.AsyncClient, key: str, count: int) -> list[asyncio.Task[Any]]:
    auth = {"Authorization": f"Bearer {key}"}
    tasks = [
        asyncio.create_task(client.post("/v1/chat/completions", json=question(n), headers=auth)) for n in range(count)
    ]
    deadline = time.monotonic() + 20
    while runtime.holds.waited_on < count:
        assert time.monotonic() < deadline, f"only {runtime.holds.waited_on} of {count} waiting"
        await asyncio.sleep(0.02)
    return tasks


async def elsewhere(runtime: Runtime, url: str, senior: str, review_id: str, text: str) -> None:
    """Decide as another process would: its own engine and hub, so this process's hub is never told."""
    engine = db.create_engine(url)
    try:
        sessions = db.session_factory(engine)
        desk = replace(runtime.desk, sessions=sessions, holds=HoldHub(sessions, 60))
        await factories.decide_as(runtime, senior, review_id, Action.OVERRIDE, text, desk=desk)
    finally:
        await engine.dispose()


async def test_waiting_clients_cost_one_batched_query_per_poll(
    served: tuple[FastAPI, httpx.AsyncClient], api_key: str
) -> None:
    app, client = served
    runtime: Runtime = app.state.runtime
    tasks = await held(runtime, client, api_key, 50)
    # Each waiter checks its review once as it registers; on SQLite those checks queue on one connection.
    await asyncio.sleep(1.5)
    statements: list[str] = []

    def counted(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", counted)
    polls = runtime.holds.polls
    await asyncio.sleep(1.0)
    event.remove(runtime.engine.sync_engine, "before_cursor_execute", counted)
    made = runtime.holds.polls - polls
    assert 3 <= made <= 6  # every 0.2 s
    # One query per poll for all 50 waiting clients: a waiter that polled on its own would make 250.
    assert len(statements) <= made + 1, statements
    runtime.holds.close()
    answers = await asyncio.gather(*tasks)
    assert {answer.json()["hitl"]["status"] for answer in answers} == {"pending"}


async def test_a_decision_made_elsewhere_is_seen_by_the_poll(
    served: tuple[FastAPI, httpx.AsyncClient], api_key: str, senior: tuple[str, str], database_url: str
) -> None:
    app, client = served
    runtime: Runtime = app.state.runtime
    (task,) = await held(runtime, client, api_key, 1)
    review = await factories.open_review(runtime)
    if runtime.listener is not None:  # on PostgreSQL, silence the notice so only the poll can tell
        await runtime.listener.connected.wait()
    engine = sqlalchemy.create_engine(db.sync_url(database_url))
    with engine.begin() as connection:  # a decision that sends no notice
        connection.execute(sqlalchemy.text("UPDATE reviews SET status = 'decided' WHERE id = :id"), {"id": review.id})
        connection.execute(
            sqlalchemy.text("UPDATE exchanges SET status = 'overridden', final_text = 'Quiet.' WHERE id = :id"),
            {"id": review.exchange_id},
        )
    engine.dispose()
    answer = await asyncio.wait_for(task, 2)
    assert answer.json()["choices"][0]["message"]["content"] == "Quiet."


async def test_the_poll_finds_the_decided_reviews_among_many_waiting(
    served: tuple[FastAPI, httpx.AsyncClient], api_key: str, database_url: str
) -> None:
    """Decisions no notice told of, found by one poll among 1,203 reviews waited on (all their ids in one query)."""
    app, client = served
    runtime: Runtime = app.state.runtime
    tasks = await held(runtime, client, api_key, 3)
    async with runtime.sessions() as session:
        reviews = (await session.exec(select(Review))).all()
    assert len(reviews) == 3
    if runtime.listener is not None:  # on PostgreSQL, silence the notices so only the poll can tell
        await runtime.listener.connected.wait()
    others = [asyncio.create_task(runtime.holds.wait(f"rev_{number:032x}", 30)) for number in range(1200)]
    while runtime.holds.waited_on < 1203:
        await asyncio.sleep(0.02)  # each registers at once; their own first looks queue behind (SQLite: one connection)
    decided = {review.exchange_id for review in reviews[:2]}
    engine = sqlalchemy.create_engine(db.sync_url(database_url))
    with engine.begin() as connection:  # decisions that send no notice
        for review in reviews[:2]:
            decide = sqlalchemy.text("UPDATE reviews SET status = 'decided' WHERE id = :id")
            connection.execute(decide, {"id": review.id})
            connection.execute(
                sqlalchemy.text("UPDATE exchanges SET status = 'overridden', final_text = 'Quiet.' WHERE id = :id"),
                {"id": review.exchange_id},
            )
    engine.dispose()
    deadline = time.monotonic() + 20
    while sum(task.done() for task in tasks) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # two more polls: the undecided one must still be waiting
    done, waiting = [task for task in tasks if task.done()], [task for task in tasks if not task.done()]
    assert len(done) == 2 and len(waiting) == 1
    answers = [task.result().json() for task in done]
    assert {answer["hitl"]["exchange_id"] for answer in answers} == decided
    assert {answer["choices"][0]["message"]["content"] for answer in answers} == {"Quiet."}
    assert not any(task.done() for task in others)
    runtime.holds.close()
    await asyncio.gather(*waiting, *others)


@on_postgres
@pytest.mark.parametrize("served", [30.0], indirect=True)  # the poll would take 30 s: only a notice is this fast
async def test_a_decision_on_another_replica_arrives_by_notice(
    served: tuple[FastAPI, httpx.AsyncClient], api_key: str, senior: tuple[str, str], database_url: str
) -> None:
    app, client = served
    runtime: Runtime = app.state.runtime
    assert runtime.listener is not None
    await asyncio.wait_for(runtime.listener.connected.wait(), 5)
    (task,) = await held(runtime, client, api_key, 1)
    review = await factories.open_review(runtime)
    await elsewhere(runtime, database_url, senior[0], review.id, "By notice.")
    answer = await asyncio.wait_for(task, 2)
    assert answer.json()["choices"][0]["message"]["content"] == "By notice."


@on_postgres
@pytest.mark.parametrize("served", [30.0], indirect=True)
async def test_a_lost_notice_connection_is_listened_again(
    served: tuple[FastAPI, httpx.AsyncClient], api_key: str, senior: tuple[str, str], database_url: str
) -> None:
    app, client = served
    runtime: Runtime = app.state.runtime
    listener = runtime.listener
    assert listener is not None
    await asyncio.wait_for(listener.connected.wait(), 5)
    engine = sqlalchemy.create_engine(db.sync_url(database_url))
    with engine.begin() as connection:  # the server drops the LISTEN connection
        killed = connection.execute(
            sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN hitl_decided%'"
            )
        ).all()
    engine.dispose()
    assert killed, "no LISTEN connection to drop"
    deadline = time.monotonic() + 10
    while listener.connections < 2 or not listener.connected.is_set():
        assert time.monotonic() < deadline, "the listener did not reconnect"
        await asyncio.sleep(0.05)
    (task,) = await held(runtime, client, api_key, 1)
    review = await factories.open_review(runtime)
    await elsewhere(runtime, database_url, senior[0], review.id, "After the drop.")
    answer = await asyncio.wait_for(task, 2)
    assert answer.json()["choices"][0]["message"]["content"] == "After the drop."


async def test_closing_answers_every_waiting_client_with_its_deadline_outcome(
    served: tuple[FastAPI, httpx.AsyncClient], api_key: str
) -> None:
    app, client = served
    runtime: Runtime = app.state.runtime
    tasks = await held(runtime, client, api_key, 5)
    started = time.monotonic()
    runtime.holds.close()
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert time.monotonic() - started < 2  # not the 20 s they asked to wait
    for answer in answers:
        body = answer.json()
        assert body["hitl"]["status"] == "pending" and body["hitl"]["review_id"].startswith("rev-")
        assert answer.headers["x-hitl-review-id"] == body["hitl"]["review_id"]


async def test_deadlines_that_pass_together_are_recorded_together(
    served: tuple[FastAPI, httpx.AsyncClient], api_key: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty clients whose waits run out at one moment: their outcomes go in a few transactions, not thirty,
    and each still gets the placeholder, its recorded outcome and its line in the trail."""
    from gateway.relay import deadlines, exchanges

    app, client = served
    batches: list[int] = []
    real = exchanges.run_out_many

    async def counted(sessions: Any, items: list[Any], now: Any) -> Any:
        batches.append(len(items))
        return await real(sessions, items, now)

    monkeypatch.setattr(exchanges, "run_out_many", counted)
    monkeypatch.setattr(deadlines, "GATHER_SECONDS", 0.2)  # however slowly this machine made the thirty
    auth = {"Authorization": f"Bearer {api_key}"}
    answers = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=question(n, wait=1.0), headers=auth) for n in range(30))
    )
    assert {answer.json()["hitl"]["status"] for answer in answers} == {"pending"}
    assert sum(batches) == 30 and len(batches) < 30, batches  # fewer transactions than clients
    await app.state.runtime.relay.drain()  # the trail's batched writes
    with factories.sync_session(database_url) as session:
        from gateway.models import EventKind, Exchange, ReviewEvent

        outcomes = {row.deadline_outcome for row in session.exec(select(Exchange)).all()}
        delivered = session.exec(select(ReviewEvent).where(ReviewEvent.kind == EventKind.DELIVERED)).all()
    assert outcomes == {"placeholder"} and len(delivered) == 30
