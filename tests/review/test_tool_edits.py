"""A held tool call is decided as a tool call: edited arguments are checked against the tool's schema from
the request, reach the client as `tool_calls` with the same ids, and stay structured in preference pairs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.app import create_app
from gateway.errors import InvalidRequest
from gateway.models import Action, Decision, Exchange, ExchangeStatus, PreferencePair
from gateway.review import tool_edits
from gateway.review.sandbox import Sandbox
from gateway.runtime import Runtime
from tests import factories
from tests.factories import MODEL, REFUNDS, console_login, tool_call

REFUND_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "reason": {"type": "string", "enum": ["damaged", "late", "other"]},
    },
    "required": ["order_id", "amount"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "issue_refund", "parameters": REFUND_SCHEMA}},
    {"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}},
]
REQUEST = {"model": MODEL, "messages": [{"role": "user", "content": "Refund order 42"}], "tools": TOOLS}
BIG = {"order_id": "42", "amount": 500}


def response(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    return factories.completion_body(content, tool_calls=list(calls))


# --- checking the agent's arguments -------------------------------------------------------------------------


async def test_edited_calls_keep_ids_and_names_and_take_the_new_arguments(sandbox: Sandbox) -> None:
    candidate = response(tool_call("issue_refund", BIG, "call_a"), tool_call("lookup_order", {"id": "42"}, "call_b"))
    edited = await tool_edits.edited(REQUEST, candidate, {"call_a": '{"order_id": "42", "amount": 50}'}, sandbox)
    assert [call["id"] for call in edited] == ["call_a", "call_b"]
    assert [call["function"]["name"] for call in edited] == ["issue_refund", "lookup_order"]
    assert json.loads(edited[0]["function"]["arguments"]) == {"order_id": "42", "amount": 50}
    assert edited[1] == candidate["choices"][0]["message"]["tool_calls"][1]  # not sent: the model's own


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"order_id": "42", "amount": 5', "are not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"order_id": "42"}', "at (top level): 'amount' is a required property"),
        ('{"order_id": "42", "amount": -3}', "at amount: -3 is less than or equal to the minimum of 0"),
        ('{"order_id": 42, "amount": 3}', "at order_id: 42 is not of type 'string'"),
        ('{"order_id": "42", "amount": 3, "reason": "bored"}', "at reason: 'bored' is not one of"),
        ('{"order_id": "42", "amount": 3, "extra": 1}', "Additional properties are not allowed ('extra'"),
    ],
)
async def test_invalid_arguments_are_refused_with_a_clear_message(
    arguments: str, message: str, sandbox: Sandbox
) -> None:
    candidate = response(tool_call("issue_refund", BIG, "call_a"))
    with pytest.raises(InvalidRequest, match="issue_refund \\(call_a\\)") as caught:
        await tool_edits.edited(REQUEST, candidate, {"call_a": arguments}, sandbox)
    assert message in caught.value.message and caught.value.param == "arguments"


async def test_a_call_the_answer_does_not_make_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(InvalidRequest, match="no tool call 'call_zzz'"):
        await tool_edits.edited(
            REQUEST, response(tool_call("issue_refund", BIG, "call_a")), {"call_zzz": "{}"}, sandbox
        )


async def test_without_a_schema_or_with_a_broken_one_any_object_goes(sandbox: Sandbox) -> None:
    tool = {"type": "function", "function": {"name": "issue_refund", "parameters": {"type": 7}}}
    broken = {**REQUEST, "tools": [tool]}
    for request in ({**REQUEST, "tools": []}, broken):
        candidate = response(tool_call("issue_refund", BIG))
        edited = await tool_edits.edited(request, candidate, {"call_1": '{"anything": 1}'}, sandbox)
        assert json.loads(edited[0]["function"]["arguments"]) == {"anything": 1}


async def test_the_legacy_functions_field_gives_schemas_too(sandbox: Sandbox) -> None:
    request = {"messages": [], "functions": [{"name": "issue_refund", "parameters": REFUND_SCHEMA}]}
    with pytest.raises(InvalidRequest, match="required property"):
        await tool_edits.edited(request, response(tool_call("issue_refund", BIG)), {"call_1": "{}"}, sandbox)


def test_forms_show_pretty_arguments_and_the_schema() -> None:
    candidate = response(tool_call("issue_refund", BIG, "call_a"), tool_call("unknown", "{not json", "call_b"))
    first, second = tool_edits.forms(REQUEST, candidate)
    assert (first.id, first.name, json.loads(first.arguments)) == ("call_a", "issue_refund", BIG)
    assert "\n" in first.arguments and json.loads(first.schema or "") == REFUND_SCHEMA
    assert (second.arguments, second.schema) == ("{not json", None)


def test_same_calls_compares_meaning_not_spelling() -> None:
    spaced = [tool_call("issue_refund", '{ "amount": 500,  "order_id": "42" }')]
    assert tool_edits.same_calls(spaced, [tool_call("issue_refund", BIG)])
    assert not tool_edits.same_calls(spaced, [tool_call("issue_refund", {**BIG, "amount": 50})])


# --- through the API and the console -------------------------------------------------------------------------


@pytest.fixture
def refunds(make_settings: Any, tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "policy.yaml"
    path.write_text(REFUNDS)
    with TestClient(create_app(make_settings(policy_path=path))) as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def held_refund(client: TestClient, upstream: factories.UpstreamMock, key: str, **extra: Any) -> dict[str, Any]:
    upstream.answer(response(tool_call("issue_refund", BIG, "call_a"), content="Refunding now."))
    body = {**REQUEST, "hitl": {"wait": 0}, **extra}
    reply = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert reply.json()["hitl"]["status"] == "pending", reply.text
    return dict(reply.json())


def poll(client: TestClient, key: str, review_id: str) -> dict[str, Any]:
    """The review as the client polls it: its status and, once decided, the completion."""
    return dict(client.get(f"/v1/reviews/{review_id}", headers=auth(key)).json())


def test_the_review_page_shows_an_editor_per_call(
    refunds: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    review_id = held_refund(refunds, upstream, api_key)["hitl"]["review_id"]
    console_login(refunds, *senior)
    page = refunds.get(f"/console/reviews/{review_id}")
    assert [call.name for call in page.context["calls"]] == ["issue_refund"]  # type: ignore[attr-defined]
    assert 'data-mode="tool_calls"' in page.text and 'name="call" value="call_a"' in page.text
    assert "Send edited calls" in page.text and "Schema of issue_refund" in page.text


def test_an_edit_reaches_the_client_as_tool_calls_with_the_same_ids(
    refunds: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str], database_url: str
) -> None:
    review_id = held_refund(refunds, upstream, api_key)["hitl"]["review_id"]
    token = console_login(refunds, *senior)
    path = f"/console/reviews/{review_id}/decide"
    edit = {"action": "edit", "call": "call_a", "csrftoken": token}

    # Invalid JSON, then a schema violation: a clear message, the draft kept, nothing sent.
    for arguments, message in (('{"amount": ', "are not valid JSON"), ('{"order_id": "42"}', "required property")):
        refused = refunds.post(path, data={**edit, "arguments": arguments})
        assert refused.status_code == 400 and message in refused.text
        assert refused.context["argument_drafts"] == {"call_a": arguments}  # type: ignore[attr-defined]
        assert poll(refunds, api_key, review_id)["status"] == "pending"

    arguments = {"order_id": "42", "amount": 50, "reason": "late"}
    done = refunds.post(path, data={**edit, "arguments": json.dumps(arguments)}, follow_redirects=False)
    assert done.status_code == 303, done.text
    completion = poll(refunds, api_key, review_id)["completion"]
    choice = completion["choices"][0]
    assert completion["hitl"]["status"] == "edited" and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Refunding now."
    (call,) = choice["message"]["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == ("call_a", "function", "issue_refund")
    assert json.loads(call["function"]["arguments"]) == {"order_id": "42", "amount": 50, "reason": "late"}

    with factories.sync_session(database_url) as session:
        exchange = session.exec(select(Exchange)).one()
        decision = session.exec(select(Decision)).one()
        pair = session.exec(select(PreferencePair)).one()
    assert exchange.status == ExchangeStatus.EDITED and exchange.final_tool_calls == [call]
    assert decision.tool_calls == [call]
    # The pair keeps both answers as assistant messages with structured tool calls.
    assert pair.chosen_message == {"role": "assistant", "content": "Refunding now.", "tool_calls": [call]}
    assert pair.rejected_message["tool_calls"][0]["function"]["arguments"] == json.dumps(BIG)

    (row,) = factories.exported(database_url, "dpo")
    assert row["chosen"] == [{"role": "assistant", "content": "Refunding now.", "tool_calls": [call]}]
    assert isinstance(row["rejected"][0]["tool_calls"], list) and row["prompt"] == REQUEST["messages"]


def test_approve_releases_the_calls_and_override_answers_with_text(
    refunds: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str], database_url: str
) -> None:
    token = console_login(refunds, *senior)
    approved = held_refund(refunds, upstream, api_key)["hitl"]["review_id"]
    refunds.post(f"/console/reviews/{approved}/decide", data={"action": "approve", "csrftoken": token})
    completion = poll(refunds, api_key, approved)["completion"]
    assert completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == json.dumps(BIG)
    assert completion["choices"][0]["finish_reason"] == "tool_calls"

    overridden = held_refund(refunds, upstream, api_key)["hitl"]["review_id"]
    text = "A refund this large needs a manager; we will email you."
    refunds.post(f"/console/reviews/{overridden}/decide", data={"action": "override", "text": text, "csrftoken": token})
    message = poll(refunds, api_key, overridden)["completion"]["choices"][0]["message"]
    assert message["content"] == text and "tool_calls" not in message
    with factories.sync_session(database_url) as session:
        pair = session.exec(select(PreferencePair)).one()
    assert pair.chosen_message == {"role": "assistant", "content": text}
    assert pair.rejected_message["tool_calls"][0]["id"] == "call_a"


def test_an_unchanged_edit_of_the_calls_is_an_approval_and_changed_drafts_stop_an_approval(
    refunds: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str], database_url: str
) -> None:
    review_id = held_refund(refunds, upstream, api_key)["hitl"]["review_id"]
    token = console_login(refunds, *senior)
    path = f"/console/reviews/{review_id}/decide"
    approve = {"action": "approve", "call": "call_a", "csrftoken": token}

    # Approving while the editor holds other arguments, or a typed text answer, would lose them: refused, kept.
    changed = json.dumps({**BIG, "amount": 50})
    for data, message in (
        ({**approve, "arguments": changed}, "You changed the arguments of issue_refund (call_a)"),
        ({**approve, "arguments": "{not json"}, "You changed the arguments of issue_refund (call_a)"),
        ({**approve, "arguments": json.dumps(BIG), "text": "We will call you."}, "You wrote a text answer"),
    ):
        refused = refunds.post(path, data=data)
        assert refused.status_code == 400 and message in refused.text
        assert refused.context["argument_drafts"] == {"call_a": data["arguments"]}  # type: ignore[attr-defined]
        assert poll(refunds, api_key, review_id)["status"] == "pending"

    # The same calls spelled another way: an approval, stored as one.
    same = {**approve, "action": "edit", "arguments": json.dumps(BIG, indent=4)}
    assert refunds.post(path, data=same, follow_redirects=False).status_code == 303
    completion = poll(refunds, api_key, review_id)["completion"]
    assert completion["hitl"]["status"] == "approved"
    assert completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == json.dumps(BIG)
    with factories.sync_session(database_url) as session:
        assert session.exec(select(Decision)).one().action == Action.APPROVE
        assert session.exec(select(PreferencePair)).first() is None


def test_an_edit_of_a_tool_call_needs_arguments_not_text(
    refunds: TestClient, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    review_id = held_refund(refunds, upstream, api_key)["hitl"]["review_id"]
    token = console_login(refunds, *senior)
    refused = refunds.post(
        f"/console/reviews/{review_id}/decide", data={"action": "edit", "text": "ok", "csrftoken": token}
    )
    assert refused.status_code == 400 and "to answer with text instead, override" in refused.text


async def test_a_waiting_streamed_client_gets_the_edited_calls_as_chunks(
    make_settings: Any, tmp_path: Path, api_key: str, upstream: factories.UpstreamMock, senior: tuple[str, str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(REFUNDS)
    app = create_app(make_settings(policy_path=path))
    upstream.answer(response(tool_call("issue_refund", BIG, "call_a")))
    body = {**REQUEST, "stream": True, "hitl": {"wait": 10}}
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:

            async def read() -> list[str]:
                async with client.stream("POST", "/v1/chat/completions", json=body, headers=auth(api_key)) as reply:
                    return [line async for line in reply.aiter_lines()]

            waiting = asyncio.create_task(read())
            review = await factories.open_review(runtime)
            arguments = {"call_a": '{"order_id": "42", "amount": 9}'}
            await factories.decide_as(runtime, senior[0], review.id, Action.EDIT, arguments=arguments)
            lines = await asyncio.wait_for(waiting, 10)
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    (calls,) = [delta["tool_calls"] for delta in deltas if "tool_calls" in delta]
    assert calls[0]["index"] == 0 and calls[0]["id"] == "call_a"
    assert json.loads(calls[0]["function"]["arguments"]) == {"order_id": "42", "amount": 9}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert [line for line in lines if line][-1] == "data: [DONE]"
    assert chunks[-1]["hitl"]["status"] == "edited"
