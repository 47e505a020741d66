"""The desk's own work never stalls the gateway or reaches out: a schema's `$ref` is never fetched, and checks
whose cost the client's schema decides run in the sandbox, stopped at their time limit while the server goes on."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.app import create_app
from gateway.errors import InvalidRequest
from gateway.models import Action, Decision, ExchangeStatus
from gateway.review import diffs, schemas
from gateway.review.sandbox import Sandbox, TooSlow
from gateway.runtime import Runtime
from tests import factories
from tests.factories import HOLD_TOOL_CALLS, MODEL, console_login, tool_call

# Backtracks for 2^n steps on n word characters followed by one that does not match: minutes for 40.
BACKTRACKS = r"^(\w+\s?)*$"
HOSTILE = "a" * 40 + "!"


class Hits:
    def __init__(self) -> None:
        self.paths: list[str] = []


@pytest.fixture
def schema_host() -> Iterator[tuple[str, Hits]]:
    """A server that would hand out a schema, and counts who asked for one."""
    hits = Hits()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            hits.paths.append(self.path)
            body = json.dumps({"type": "integer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


# --- schemas ----------------------------------------------------------------------------------------------------


def test_a_ref_to_a_url_is_never_fetched(schema_host: tuple[str, Hits]) -> None:
    base, hits = schema_host
    schema = {"type": "object", "properties": {"amount": {"$ref": f"{base}/amount.json"}}}
    assert schemas.problem(schema, {"amount": "not an integer"}) is None  # checked as an object only
    nested = {"$id": f"{base}/root.json", "allOf": [{"$ref": "other.json"}]}
    assert schemas.problem(nested, {"anything": 1}) is None
    assert hits.paths == []


def test_a_ref_to_a_file_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "schema.json"
    secret.write_text(json.dumps({"type": "integer"}))
    schema = {"type": "object", "properties": {"amount": {"$ref": secret.as_uri()}}}
    assert schemas.problem(schema, {"amount": "not an integer"}) is None


def test_refs_within_the_schema_still_count() -> None:
    schema = {
        "type": "object",
        "$defs": {"money": {"type": "number", "exclusiveMinimum": 0}},
        "properties": {"amount": {"$ref": "#/$defs/money"}},
    }
    assert schemas.problem(schema, {"amount": 5}) is None
    assert schemas.problem(schema, {"amount": -5}) == "at amount: -5 is less than or equal to the minimum of 0"


# --- the sandbox ------------------------------------------------------------------------------------------------


async def test_a_backtracking_pattern_is_stopped_while_the_event_loop_goes_on() -> None:
    sandbox = Sandbox(seconds=1.0)
    try:
        assert await sandbox.run(schemas.problem, {"type": "string"}, "warm", what="A check") is None  # started
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        with pytest.raises(TooSlow, match="A check took longer than 1 s and was stopped"):
            await sandbox.run(schemas.problem, {"type": "string", "pattern": BACKTRACKS}, HOSTILE, what="A check")
        ticker.cancel()
        # In the server's own process the match would have held the GIL: not one tick until it ended.
        assert ticks >= 3
        # The stopped worker is replaced: the next check runs.
        found = await sandbox.run(schemas.problem, {"type": "string", "pattern": "^a+$"}, "ab", what="A check")
        assert found == "at (top level): 'ab' does not match '^a+$'"
    finally:
        sandbox.close()


async def test_diffs_run_in_the_sandbox(sandbox: Sandbox) -> None:
    segments = await sandbox.run(diffs.segments, "Paris is the capital.", "Lyon is the capital of France.", what="")
    assert segments == [
        ("del", "Paris"),
        ("ins", "Lyon"),
        ("same", " is the "),
        ("del", "capital."),
        ("ins", "capital of France."),
    ]


def test_a_long_rewrite_diffs_word_by_word() -> None:
    before = " ".join(f"word{i}" for i in range(300))
    after = " ".join(f"term{i}" if i % 3 else f"word{i}" for i in range(300))
    segments = diffs.segments(before, after)
    assert "".join(text for kind, text in segments if kind != "ins") == before
    assert "".join(text for kind, text in segments if kind != "del") == after
    assert sum(kind == "same" for kind, _ in segments) >= 99


# --- through the console ----------------------------------------------------------------------------------------


def refund_request(parameters: dict[str, Any]) -> dict[str, Any]:
    tool = {"type": "function", "function": {"name": "issue_refund", "parameters": parameters}}
    return {"model": MODEL, "messages": [{"role": "user", "content": "Refund order 42"}], "tools": [tool]}


@pytest.fixture
def refunds(make_settings: Any, tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "policy.yaml"
    path.write_text(HOLD_TOOL_CALLS)
    with TestClient(create_app(make_settings(policy_path=path, check_seconds=1.0))) as client:
        yield client


def held(client: TestClient, upstream: factories.UpstreamMock, key: str, request: dict[str, Any]) -> str:
    upstream.answer(factories.completion_body(None, tool_calls=[tool_call("issue_refund", {"note": "ok"}, "call_a")]))
    reply = client.post("/v1/chat/completions", json={**request, "hitl": {"wait": 0}}, headers={"Authorization": key})
    assert reply.json()["hitl"]["status"] == "pending", reply.text
    return str(reply.json()["hitl"]["review_id"])


def test_an_edit_against_a_backtracking_pattern_is_refused_in_time_and_the_draft_kept(
    refunds: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    request = refund_request({"type": "object", "properties": {"note": {"type": "string", "pattern": BACKTRACKS}}})
    review_id = held(refunds, upstream, f"Bearer {api_key}", request)
    token = console_login(refunds, *senior)
    arguments = json.dumps({"note": HOSTILE})
    data = {"action": "edit", "call": "call_a", "arguments": arguments, "csrftoken": token}
    refused = refunds.post(f"/console/reviews/{review_id}/decide", data=data)
    assert refused.status_code == 400
    assert "Checking the arguments of issue_refund (call_a) against the tool&#39;s schema took longer than 1 s" in (
        refused.text
    )
    assert refused.context["argument_drafts"] == {"call_a": arguments}  # type: ignore[attr-defined]
    # Meanwhile the process served others; afterwards it still does.
    assert refunds.get("/health/live").status_code == 200
    polled = refunds.get(f"/v1/reviews/{review_id}", headers={"Authorization": f"Bearer {api_key}"})
    assert polled.json()["status"] == "pending"


def test_an_edit_against_a_schema_with_a_remote_ref_sends_no_request(
    refunds: TestClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    senior: tuple[str, str],
    schema_host: tuple[str, Hits],
) -> None:
    base, hits = schema_host
    request = refund_request({"type": "object", "properties": {"note": {"$ref": f"{base}/note.json"}}})
    review_id = held(refunds, upstream, f"Bearer {api_key}", request)
    token = console_login(refunds, *senior)
    data = {"action": "edit", "call": "call_a", "arguments": '{"note": "late"}', "csrftoken": token}
    done = refunds.post(f"/console/reviews/{review_id}/decide", data=data, follow_redirects=False)
    assert done.status_code == 303, done.text
    assert hits.paths == []


# --- structured answers ----------------------------------------------------------------------------------------

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


async def held_structured(
    aclient: httpx.AsyncClient, upstream: factories.UpstreamMock, key: str, response_format: dict[str, Any]
) -> str:
    upstream.answer(factories.completion_body('{"city": "Lyon", "population": 500000}', logprob=-0.2))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "response_format": response_format,
        "hitl": {"wait": 0},
    }
    reply = await aclient.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert reply.json()["hitl"]["status"] == "pending", reply.text
    return str(reply.json()["hitl"]["review_id"])


SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}


@pytest.mark.parametrize(
    ("response_format", "action", "text", "message"),
    [
        (SCHEMA_FORMAT, Action.EDIT, "Paris, 2.1 million", "is not valid JSON"),
        (SCHEMA_FORMAT, Action.OVERRIDE, "Sorry, I cannot tell.", "is not valid JSON"),
        (SCHEMA_FORMAT, Action.EDIT, '{"city": "Paris"}', "at (top level): 'population' is a required property"),
        (SCHEMA_FORMAT, Action.EDIT, '{"city": "Paris", "population": -1}', "at population: -1 is less than"),
        ({"type": "json_object"}, Action.EDIT, '["Paris"]', "must be a JSON object"),
    ],
)
async def test_an_edit_of_a_structured_answer_meets_the_requests_schema(
    app: FastAPI,
    aclient: httpx.AsyncClient,
    api_key: str,
    upstream: factories.UpstreamMock,
    agent: tuple[str, str],
    response_format: dict[str, Any],
    action: Action,
    text: str,
    message: str,
) -> None:
    runtime: Runtime = app.state.runtime
    review_id = await held_structured(aclient, upstream, api_key, response_format)
    with pytest.raises(InvalidRequest, match="The client asked for a JSON answer") as caught:
        await factories.decide_as(runtime, agent[0], review_id, action, text=text)
    assert message in caught.value.message
    async with runtime.sessions() as session:
        assert (await session.exec(select(Decision))).first() is None


async def test_a_structured_edit_that_meets_the_schema_is_delivered(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    runtime: Runtime = app.state.runtime
    review_id = await held_structured(aclient, upstream, api_key, SCHEMA_FORMAT)
    text = '{"city": "Paris", "population": 2100000}'
    decided = await factories.decide_as(runtime, agent[0], review_id, Action.EDIT, text=text)
    assert decided.exchange.status == ExchangeStatus.EDITED and decided.exchange.final_text == text
