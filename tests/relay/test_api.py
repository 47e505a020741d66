"""The gateway as a drop-in for the OpenAI SDK, with the upstream mocked by respx."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import httpx
import openai
import psycopg
import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway import db
from gateway.app import create_app
from gateway.models import Exchange
from gateway.settings import Settings
from tests import factories
from tests.factories import MODEL

CONFIDENT = factories.completion_body("Paris is the capital of France.", logprob=-0.001)


def sdk(client: TestClient, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


def test_sync_completion_is_released_with_hitl_block(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    route = upstream.answer(CONFIDENT)
    result = sdk(client, api_key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert result.choices[0].message.content == "Paris is the capital of France."
    assert result.model == MODEL
    assert result.id.startswith("chatcmpl-")
    hitl = result.model_extra["hitl"]
    assert hitl["status"] == "released" and hitl["exchange_id"] == result.id
    assert 0.92 <= hitl["confidence"] <= 1.0
    # The gateway asks for logprobs upstream, for the provider model, but the client did not ask for them.
    assert upstream.sent()["logprobs"] is True and upstream.sent()["top_logprobs"] == 5
    assert upstream.sent()["model"] == "gpt-4o-mini"
    assert result.choices[0].logprobs is None
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-upstream"


def test_client_logprobs_are_trimmed_to_what_it_asked(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    result = sdk(client, api_key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Capital?"}], logprobs=True, top_logprobs=1
    )
    assert upstream.sent()["top_logprobs"] == 5
    tokens = result.choices[0].logprobs.content
    assert tokens and all(len(t.top_logprobs) == 1 for t in tokens)


def test_unknown_fields_tools_and_n_pass_through(
    make_settings: Callable[..., Settings], tmp_path: Path, api_key: str, upstream: factories.UpstreamMock
) -> None:
    releasing = tmp_path / "policy.yaml"
    releasing.write_text(factories.REFUNDS)  # `tool_calls: {route: release}`: the operator releases actions
    with TestClient(create_app(make_settings(policy_path=releasing))) as client:
        _passes_through(client, api_key, upstream)


def _passes_through(client: TestClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    body = factories.completion_body(None, tool_calls=[tool_call], n=2)
    upstream.answer(body)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    result = sdk(client, api_key).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Look it up"}],
        tools=tools,
        n=2,
        extra_body={"some_future_field": {"keep": True}, "hitl": {"wait": 0}},
        temperature=0.3,
    )
    upstream_body = upstream.sent()
    assert upstream_body["tools"] == tools and upstream_body["n"] == 2 and upstream_body["temperature"] == 0.3
    assert upstream_body["some_future_field"] == {"keep": True}
    assert "hitl" not in upstream_body and "stream" not in upstream_body
    # A tool call has no scored tokens; the policy's `tool_calls` outcome releases it, both choices.
    assert result.model_extra["hitl"]["status"] == "released"
    assert [choice.finish_reason for choice in result.choices] == ["tool_calls", "tool_calls"]
    assert all(choice.message.tool_calls[0].function.name == "lookup" for choice in result.choices)
    assert result.choices[0].message.tool_calls[0].id == "call_1"


def test_n_greater_than_one_released(client: TestClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.answer(factories.completion_body("Paris.", logprob=-0.001, n=3))
    result = sdk(client, api_key).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}], n=3)
    assert [c.index for c in result.choices] == [0, 1, 2]
    assert all(c.message.content == "Paris." for c in result.choices)


def test_streaming_released_replays_sse_with_usage(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    stream = sdk(client, api_key).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Capital?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris is the capital of France."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == CONFIDENT["usage"]["total_tokens"]
    # The upstream is streamed too (its usage asked for whatever the client asked), and read whole before release.
    assert upstream.sent()["stream"] is True and upstream.sent()["stream_options"] == {"include_usage": True}


async def test_async_sdk(aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.answer(CONFIDENT)
    client = openai.AsyncOpenAI(base_url="http://testserver/v1", api_key=api_key, http_client=aclient, max_retries=0)
    result = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Capital?"}])
    assert result.choices[0].message.content == "Paris is the capital of France."
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Capital?"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert "".join(p or "" for p in pieces) == "Paris is the capital of France."


def test_models_list_and_retrieve(client: TestClient, api_key: str) -> None:
    client_sdk = sdk(client, api_key)
    assert [m.id for m in client_sdk.models.list()] == [MODEL]
    assert client_sdk.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client_sdk.models.retrieve("nope")


# --- errors: always the OpenAI shape, the right status, and an x-request-id --------------------------


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"]
    return error


def post(client: TestClient, key: str | None, content: bytes | str) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return client.post("/v1/chat/completions", content=content, headers=headers)


def test_malformed_json(client: TestClient, api_key: str) -> None:
    assert _error(post(client, api_key, b'{"model": '), 400)["code"] == "invalid_json"
    assert _error(post(client, api_key, b"[1, 2]"), 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": 42, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "hitl": {"wait": -1}}, "hitl.wait"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "hitl": {"wait": 3600}}, "hitl.wait"),
    ],
)
def test_missing_or_mistyped_fields(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, body: dict, param: str
) -> None:
    upstream.answer(CONFIDENT)
    error = _error(post(client, api_key, json.dumps(body)), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error


def test_unknown_model(client: TestClient, api_key: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(client, api_key).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"
    assert "gpt-9" in caught.value.message


def test_bad_and_missing_key(client: TestClient, api_key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(client, "hitl-wrong").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "invalid_api_key"
    assert _error(post(client, None, b"{}"), 401)["code"] == "missing_api_key"
    assert (
        _error(client.get("/v1/models", headers={"Authorization": "Basic abc"}), 401)["type"] == "authentication_error"
    )


def test_a_key_is_looked_up_once_per_cache_period(
    client: TestClient, api_key: str, clock: factories.ManualClock
) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    lookups: list[str] = []

    def seen(conn, cursor, statement: str, *args: object) -> None:
        if "FROM api_keys" in statement:
            lookups.append(statement)

    sqlalchemy.event.listen(runtime.engine.sync_engine, "before_cursor_execute", seen)
    headers = {"Authorization": f"Bearer {api_key}"}
    assert [client.get("/v1/models", headers=headers).status_code for _ in range(5)] == [200] * 5
    assert len(lookups) == 1
    for _ in range(3):
        assert _error(client.get("/v1/models", headers={"Authorization": "Bearer hitl-wrong"}), 401)
    assert len(lookups) == 4  # a wrong key is looked up every time, never remembered
    clock.advance(runtime.settings.key_cache_seconds)
    assert client.get("/v1/models", headers=headers).status_code == 200
    assert len(lookups) == 5


def test_a_released_exchange_is_one_insert_in_one_trip(
    client: TestClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A released exchange is a single INSERT: on PostgreSQL in autocommit on psycopg's own connection (no ping,
    no BEGIN and COMMIT round trips), on SQLite written and committed in one trip to aiosqlite's thread, the whole
    request included."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    inserts: list[tuple[str, object]] = []

    def seen(conn, cursor, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO"):
            inserts.append((statement.split()[2], conn.get_execution_options().get("isolation_level")))

    trips: list[object] = []
    carry = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: object, *args: object, **kwargs: object) -> object:
        trips.append(fn)
        return await carry(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    direct: list[tuple[str, bool]] = []
    run = psycopg.AsyncConnection.execute

    async def executed(self: psycopg.AsyncConnection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        direct.append((" ".join(str(query).split()[:3]), self.autocommit))
        return await run(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", executed)
    sqlalchemy.event.listen(runtime.engine.sync_engine, "before_cursor_execute", seen)
    headers = {"Authorization": f"Bearer {api_key}"}
    upstream.answer(CONFIDENT)
    for number in range(4):
        if number == 1:  # the first request opened the connection and looked its key up: not counted
            inserts.clear()
            trips.clear()
            direct.clear()
        question = {"model": MODEL, "messages": [{"role": "user", "content": f"Capital? ({number})"}]}
        answer = client.post("/v1/chat/completions", json=question, headers=headers).json()
        assert answer["hitl"]["status"] == "released"
    with factories.sync_session(database_url) as session:
        assert len(session.exec(select(Exchange)).all()) == 4
    assert inserts == []  # none through SQLAlchemy
    if db.is_postgres(database_url):
        assert direct == [("INSERT INTO exchanges", True)] * 3
    else:
        assert len(trips) == 3 and direct == []


def test_a_held_exchange_commits_with_its_review_or_not_at_all(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, database_url: str
) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    inserts: list[str] = []
    fail_events = False

    def seen(conn, cursor, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO"):
            inserts.append(statement.split()[2])
            if inserts[-1] == "review_events" and fail_events:
                raise RuntimeError("the trail event could not be written")

    sqlalchemy.event.listen(runtime.engine.sync_engine, "before_cursor_execute", seen)
    headers = {"Authorization": f"Bearer {api_key}"}
    question = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "hitl": {"wait": 0}}
    upstream.answer(factories.completion_body("Lyon.", logprob=-1.5))
    assert client.post("/v1/chat/completions", json=question, headers=headers).json()["hitl"]["status"] == "pending"
    # The exchange, its review and the trail's `held` event (then the wait's own writes).
    assert inserts[:3] == ["exchanges", "reviews", "review_events"]

    fail_events = True
    with pytest.raises(RuntimeError):
        client.post("/v1/chat/completions", json=question, headers=headers)
    with factories.sync_session(database_url) as session:
        assert len(session.exec(select(Exchange)).all()) == 1  # the second exchange and its review rolled back


@pytest.mark.parametrize(
    ("mock", "status", "code", "kind", "upstream_status"),
    [
        (httpx.Response(500, json={"error": {"message": "boom"}}), 502, "upstream_error", "http_error", 500),
        (httpx.Response(200, text="<html>not json</html>"), 502, "upstream_error", "malformed", 200),
        (httpx.Response(200, json={"choices": []}), 502, "upstream_error", "malformed", None),
        (
            httpx.Response(429, json={"error": {"message": "slow down"}}),
            429,
            "rate_limit_exceeded",
            "rate_limited",
            429,
        ),
        (httpx.Response(400, json={"error": {"message": "bad tool schema"}}), 400, None, "rejected", 400),
        (httpx.ConnectError("refused"), 502, "upstream_error", "unreachable", None),
        (httpx.ReadTimeout("slow"), 504, "upstream_timeout", "timeout", None),
    ],
)
def test_upstream_failures(
    client: TestClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    mock: object,
    status: int,
    code: str | None,
    kind: str,
    upstream_status: int | None,
) -> None:
    route = upstream.chat
    if isinstance(mock, Exception):
        route.mock(side_effect=mock)
    else:
        route.mock(return_value=mock)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    with caplog.at_level(logging.WARNING, logger="hitl.relay"):
        response = client.post(
            "/v1/chat/completions",
            content=body,
            headers={"Authorization": f"Bearer {api_key}", "x-request-id": "req-failing-1"},
        )
    error = _error(response, status)
    if code:
        assert error["code"] == code
    else:
        assert "bad tool schema" in error["message"]
    # Recorded: a failed exchange with the kind, the provider's status and the latency; no provider message.
    with factories.sync_session(database_url) as session:
        (failed,) = session.exec(select(Exchange)).all()
    assert (failed.status, failed.error_kind, failed.upstream_status) == ("failed", kind, upstream_status)
    assert failed.request_id == "req-failing-1" and failed.upstream_ms >= 0 and failed.response == {}
    (line,) = [record.getMessage() for record in caplog.records if record.name == "hitl.relay"]
    assert line.startswith("upstream_failed request_id=req-failing-1 ") and f"kind={kind} " in line
    assert "boom" not in line and "slow" not in line and "sk-upstream" not in line


def test_upstream_failure_reaches_the_sdk_as_an_api_error(
    make_settings, api_key: str, upstream: factories.UpstreamMock
) -> None:
    """A streamed request whose upstream fails within the first keep-alive interval gets an HTTP error. (Past it,
    the 200 is out and the error travels as an SSE event: `test_wire_bytes`.) The interval is the test settings'
    30 s, so a slow machine cannot push the failure past it."""
    settings = make_settings()
    upstream.respond(httpx.ReadTimeout("slow"))
    with TestClient(create_app(settings)) as client, pytest.raises(openai.InternalServerError) as caught:
        sdk(client, api_key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert caught.value.status_code == 504


def test_unknown_path_and_method_are_json(client: TestClient, api_key: str) -> None:
    assert _error(client.get("/v1/nothing-here"), 404)["code"] == "not_found"
    assert _error(client.get("/v1/chat/completions"), 405)["type"] == "invalid_request_error"


def test_client_request_id_is_echoed(client: TestClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    upstream.answer(CONFIDENT)
    response = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {api_key}", "x-request-id": "client-123"},
    )
    assert response.headers["x-request-id"] == "client-123"


def test_internal_error_is_json_without_traceback(
    make_settings, database_url: str, upstream: factories.UpstreamMock
) -> None:
    app = create_app(make_settings())

    @app.get("/v1/explode")
    async def explode() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        error = _error(client.get("/v1/explode"), 500)
    assert "secret internals" not in error["message"]


@pytest.mark.parametrize(
    ("given", "passed"),
    [("7", "7"), ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT"), (None, None), ("x" * 100, None)],
)
def test_the_upstreams_retry_after_reaches_the_client_on_a_429(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, given: str | None, passed: str | None
) -> None:
    headers = {"retry-after": given} if given is not None else {}
    upstream.answer({"error": {"message": "slow down"}}, status=429).mock(
        return_value=httpx.Response(429, json={"error": {"message": "slow down"}}, headers=headers)
    )
    refused = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert refused.status_code == 429 and refused.headers.get("retry-after") == passed
