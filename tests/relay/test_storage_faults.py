"""A database that is down or full is answered, not crashed on: a 503 in the dialect's shape with Retry-After,
one log line without a traceback; and what is stored and indexed is checked for length before the upstream is
asked."""

from __future__ import annotations

import logging
import sqlite3

import httpx
import psycopg
import pytest
import sqlalchemy.exc
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.runtime import Runtime
from tests import factories
from tests.factories import MODEL

CONFIDENT = factories.completion_body("Paris is the capital of France.", logprob=-0.001)


@pytest.mark.parametrize(
    "failure",
    [
        sqlite3.OperationalError("database or disk is full"),
        psycopg.OperationalError("connection is lost"),
        sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly")),
    ],
    ids=["sqlite-full", "psycopg-lost", "sqlalchemy-down"],
)
def test_a_database_that_fails_a_write_is_a_503_with_retry_after(
    app: FastAPI,
    client: TestClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    upstream.answer(CONFIDENT)
    runtime: Runtime = app.state.runtime

    async def failing(*args: object) -> None:
        raise failure

    monkeypatch.setattr(runtime.relay.inserts, "one", failing)
    question = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}]}
    with caplog.at_level(logging.WARNING, logger="hitl.errors"):
        chat = client.post("/v1/chat/completions", json=question, headers={"Authorization": f"Bearer {api_key}"})
        messages = client.post("/v1/messages", json={**question, "max_tokens": 10}, headers={"x-api-key": api_key})
    assert chat.status_code == 503 and chat.headers["retry-after"] == "5"
    assert chat.json()["error"]["code"] == "storage_unavailable"
    assert messages.status_code == 503 and messages.json()["type"] == "error"  # Anthropic's shape
    lines = [record for record in caplog.records if record.name == "hitl.errors"]
    assert len(lines) == 2 and all(record.exc_info is None for record in lines)  # one line each, no traceback


def test_a_model_name_too_long_to_store_is_refused_before_the_upstream_is_asked(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    question = {"model": "m" * 3000, "messages": [{"role": "user", "content": "Capital?"}]}
    refused = client.post("/v1/chat/completions", json=question, headers={"Authorization": f"Bearer {api_key}"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
    assert not upstream.chat.called


def test_the_clients_connection_stays_open_after_a_503(
    app: FastAPI, api_key: str, upstream: factories.UpstreamMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.answer(CONFIDENT)
    upstream.pass_loopback()
    with factories.serving(app) as base:
        runtime: Runtime = app.state.runtime
        real = runtime.relay.inserts.one

        async def failing_once(*args: object) -> None:
            monkeypatch.setattr(runtime.relay.inserts, "one", real)
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(runtime.relay.inserts, "one", failing_once)
        question = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}]}
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {api_key}"}) as client:
            first = client.post("/v1/chat/completions", json=question)
            second = client.post("/v1/chat/completions", json=question)
            opened = [first.extensions["network_stream"], second.extensions["network_stream"]]
    assert (first.status_code, second.status_code) == (503, 200)
    assert first.headers.get("connection") != "close" and opened[0] is opened[1]  # the same kept-alive connection
