"""Retention and erasure: a customer's conversations erased from every table and export on request, and
conversations past their retention period purged to their labels (or wholly), with a trail of both."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from sqlmodel import SQLModel, select
from typer.testing import CliRunner

from gateway import db
from gateway.app import create_app
from gateway.cli import app as cli
from gateway.models import ApiKey, DataRemoval, Decision, Exchange, PreferencePair, Review, utcnow
from gateway.retention import purge as purging
from gateway.settings import RetentionSettings
from tests import factories
from tests.factories import MODEL, console_login

runner = CliRunner()
HOOK = "https://hooks.example.test/hitl"
ERASED, KEPT = "cust-42", "cust-7"


def converse(client: TestClient, upstream: factories.UpstreamMock, key: str, agent, user: str, word: str) -> str:
    """A held question naming `user`, whose answer an agent rewrites: every table gets a row about it. `word`
    marks everything the conversation wrote (question, answer, edit, comment)."""
    upstream.answer(factories.completion_body(f"{word} is far.", logprob=-0.2))
    body = {
        "model": MODEL,
        "user": user,
        "messages": [{"role": "user", "content": f"Where is {word}?"}],
        "hitl": {"wait": 0},
    }
    hitl = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}).json()["hitl"]
    token = console_login(client, *agent)
    decided = client.post(
        f"/console/reviews/{hitl['review_id']}/decide",
        data={"action": "edit", "text": f"{word} is near.", "comment": f"about {word}", "csrftoken": token},
        follow_redirects=False,
    )
    assert decided.status_code == 303
    return str(hitl["exchange_id"])


def every_row(url: str) -> str:
    """Every row of every table, as text."""
    engine = sqlalchemy.create_engine(db.sync_url(url))
    try:
        with engine.connect() as connection:
            return "\n".join(
                str(tuple(row))
                for table in SQLModel.metadata.sorted_tables
                for row in connection.execute(table.select())
            )
    finally:
        engine.dispose()


@pytest.fixture
def two_customers(
    make_settings, upstream: factories.UpstreamMock, api_key: str, agent, database_url: str
) -> dict[str, str]:
    upstream.router.post(HOOK).respond(204)
    with factories.sync_session(database_url) as session:
        key = session.exec(select(ApiKey)).one()
    assert (
        runner.invoke(cli, ["keys", "webhook", str(key.id), HOOK], env={"HITL_DATABASE_URL": database_url}).exit_code
        == 0
    )
    with TestClient(create_app(make_settings())) as client:
        return {
            ERASED: converse(client, upstream, api_key, agent, ERASED, "Zanzibar"),
            KEPT: converse(client, upstream, api_key, agent, KEPT, "Timbuktu"),
        }


def test_an_erased_customer_is_gone_from_every_table_and_export(
    two_customers: dict[str, str], env: str, database_url: str
) -> None:
    before = every_row(database_url)
    assert "Zanzibar" in before and ERASED in before  # what there is to erase
    dry = runner.invoke(cli, ["erase", "--user", ERASED, "--dry-run"])
    assert dry.exit_code == 0 and "1 exchanges name this customer at user" in dry.output
    assert "Zanzibar" in every_row(database_url)

    done = runner.invoke(cli, ["erase", "--user", ERASED])
    assert done.exit_code == 0, done.output
    assert "erased 1 exchanges" in done.output and "exchanges 1" in done.output and "preference_pairs 1" in done.output
    assert "webhook_outbox 2" in done.output and "approved_answers 1" in done.output  # its held and decided events
    after = every_row(database_url)
    assert "Zanzibar" not in after and ERASED not in after  # in no table, the trail included
    assert "Timbuktu" in after  # the other customer's are all there
    exported = asyncio.run(factories.export_rows(database_url, "records"))
    assert exported and not [row for row in exported if "Zanzibar" in str(row)]
    with factories.sync_session(database_url) as session:
        [trail] = session.exec(select(DataRemoval)).all()
    assert trail.kind == "erase" and trail.criterion.startswith("user sha256:") and trail.removed["reviews"] == 1
    again = runner.invoke(cli, ["erase", "--user", ERASED])
    assert again.exit_code == 0 and "erased 0 exchanges" in again.output


def test_erasure_matches_the_configured_field(two_customers: dict[str, str], env: str, monkeypatch) -> None:
    monkeypatch.setenv("HITL_RETENTION__USER_FIELD", "metadata.customer_id")
    nothing = runner.invoke(cli, ["erase", "--user", ERASED, "--dry-run"])
    assert nothing.exit_code == 0 and "0 exchanges name this customer at metadata.customer_id" in nothing.output
    assert runner.invoke(cli, ["erase", "--user", " "]).exit_code == 1


def purge_at(url: str, settings: RetentionSettings, days_later: float) -> tuple[int, Any]:
    async def run() -> tuple[int, Any]:
        engine = db.create_engine(url)
        try:
            async with db.session_factory(engine)() as session:
                return await purging.purge(session, settings, utcnow() + timedelta(days=days_later))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_a_purge_keeps_the_labels_and_removes_every_text(two_customers: dict[str, str], database_url: str) -> None:
    assert purge_at(database_url, RetentionSettings(days=30), 29)[0] == 0  # not due yet
    count, removed = purge_at(database_url, RetentionSettings(days=30), 31)
    assert count == 2 and removed["exchanges"] == 2 and removed["preference_pairs"] == 2
    after = every_row(database_url)
    assert "Zanzibar" not in after and "Timbuktu" not in after and ERASED not in after
    with factories.sync_session(database_url) as session:
        decisions = session.exec(select(Decision)).all()
        exchanges = session.exec(select(Exchange)).all()
        assert session.exec(select(PreferencePair)).all() == []
    assert [decision.action for decision in decisions] == ["edit", "edit"]  # the labels stay
    assert all(exchange.purged_at is not None and exchange.confidence is not None for exchange in exchanges)
    assert len(factories.labels_in(database_url)) == 2  # calibration still learns from them
    assert purge_at(database_url, RetentionSettings(days=30), 31)[0] == 0  # purged once


def test_a_purge_of_everything_leaves_no_record(two_customers: dict[str, str], database_url: str) -> None:
    count, removed = purge_at(database_url, RetentionSettings(days=30, keep="nothing"), 31)
    assert count == 2 and removed["reviews"] == 2
    with factories.sync_session(database_url) as session:
        assert session.exec(select(Exchange)).all() == [] and session.exec(select(Review)).all() == []


def test_a_key_keeps_its_own_retention_and_open_reviews_wait(
    make_settings, upstream: factories.UpstreamMock, api_key: str, agent, env: str, database_url: str
) -> None:
    with TestClient(create_app(make_settings())) as client:
        held = factories.held(client, upstream, api_key)
        with factories.sync_session(database_url) as session:
            key = session.exec(select(ApiKey)).one()
        done = runner.invoke(cli, ["keys", "retention", str(key.id), "--days", "1"])
        assert done.exit_code == 0 and "keeps its conversations 1 days" in done.output
        forever = RetentionSettings(days=0)  # globally: until erased; this key: a day
        assert purge_at(database_url, forever, 2)[0] == 0  # due, but still open: it waits for its decision
        token = console_login(client, *agent)
        client.post(f"/console/reviews/{held['review_id']}/decide", data={"action": "approve", "csrftoken": token})
    assert purge_at(database_url, forever, 0.5)[0] == 0
    assert purge_at(database_url, forever, 2)[0] == 1
    assert runner.invoke(cli, ["keys", "retention", str(key.id)]).exit_code == 1  # neither --days nor --default
    back = runner.invoke(cli, ["keys", "retention", str(key.id), "--default"])
    assert back.exit_code == 0 and "the global retention period" in back.output
    dry = runner.invoke(cli, ["purge", "--dry-run"])
    assert dry.exit_code == 0 and "0 exchanges are past their retention period" in dry.output


def test_serve_purges_on_a_schedule(
    make_settings, upstream: factories.UpstreamMock, api_key: str, database_url: str
) -> None:
    upstream.answer(factories.completion_body("Paris is the capital of France."))  # released
    retention = RetentionSettings(days=2 / 86400, every_seconds=0.5)  # two seconds
    settings = make_settings(retention=retention)
    with TestClient(create_app(settings)) as client, TestClient(create_app(settings)):
        question = {"model": MODEL, "user": KEPT, "messages": [{"role": "user", "content": "Capital of France?"}]}
        client.post("/v1/chat/completions", json=question, headers={"Authorization": f"Bearer {api_key}"})
        deadline = time.monotonic() + 60  # each run is its own `hitl purge` process: seconds on a slow machine
        while time.monotonic() < deadline:
            with factories.sync_session(database_url) as session:
                if session.exec(select(Exchange)).one().purged_at is not None:
                    break
            time.sleep(0.2)
    with factories.sync_session(database_url) as session:
        exchange = session.exec(select(Exchange)).one()
        trails = session.exec(select(DataRemoval)).all()
    assert exchange.purged_at is not None and KEPT not in str(exchange.request)
    assert [trail.removed["exchanges"] for trail in trails] == [1]  # one run purged it (the lease), once
