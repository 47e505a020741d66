"""Tool calls have their own policy: rules on the call's name and arguments, a default for calls no rule
matches, and malformed arguments routed as unscored."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway import policy
from gateway.conversation import toolcalls
from gateway.models import Route
from gateway.policy import PolicyError
from tests import factories
from tests.factories import MODEL, REFUNDS
from tests.factories import tool_call as call


def answer(*calls: dict[str, Any]) -> dict[str, Any]:
    return factories.completion_body(None, tool_calls=list(calls))


def routed(spec: str, response: dict[str, Any], request: dict[str, Any] | None = None) -> policy.Routing:
    found = toolcalls.found(response)
    missing = [toolcalls.MALFORMED] if any(c.malformed for c in found) else []
    return policy.parse(spec).route(None, request or {}, missing, found)


@pytest.mark.parametrize(
    ("calls", "route", "tier", "reason"),
    [
        ([call("issue_refund", {"amount": 250})], Route.HOLD, "senior", "rule 'big-refund' matched"),
        ([call("issue_refund", {"amount": 100})], Route.RELEASE, None, "tool calls (issue_refund) matched no rule"),
        ([call("issue_refund", {"amount": "250"})], Route.RELEASE, None, "matched no rule"),  # a string is no amount
        ([call("lookup_order", {"amount": 999})], Route.RELEASE, None, "matched no rule"),
        # One call must meet every condition: a big amount on another tool does not make a refund big.
        ([call("issue_refund", {"amount": 5}), call("lookup", {"amount": 500}, "c2")], Route.RELEASE, None, ""),
        ([call("lookup", {}), call("issue_refund", {"amount": 101}, "c2")], Route.HOLD, "senior", "big-refund"),
        ([call("wire", {"iban": "FR7630006000011234567890189"})], Route.HOLD, "agent", "wire-to-unknown"),
        ([call("wire", {"iban": "DE89370400440532013000"})], Route.RELEASE, None, "matched no rule"),
        ([call("issue_refund", "{not json")], Route.HOLD, "agent", "unscored (tool_call:malformed_arguments"),
        ([call("issue_refund", "[1, 2]")], Route.HOLD, "agent", "malformed"),
    ],
)
def test_tool_call_routing(calls: list[dict[str, Any]], route: Route, tier: str | None, reason: str) -> None:
    found = routed(REFUNDS, answer(*calls))
    assert (found.route, found.tier) == (route, tier) and reason in found.reason


def test_the_rule_reason_names_the_comparison() -> None:
    found = routed(REFUNDS, answer(call("issue_refund", {"amount": 250})))
    assert found.reason == (
        "rule 'big-refund' matched (response.tool_calls.name = 'issue_refund', "
        "response.tool_calls.arguments.amount > 100)"
    )


def test_comparisons_on_request_paths_still_work() -> None:
    spec = REFUNDS + "  - name: long-wait\n    when: {metadata.priority: [p1, p2]}\n    route: hold\n    tier: senior\n"
    found = policy.parse(spec).route(0.99, {"metadata": {"priority": "p1"}}, [])
    assert found.tier == "senior" and "long-wait" in found.reason


def test_without_a_tool_calls_outcome_tool_calls_are_routed_by_the_judges_confidence() -> None:
    spec = policy.parse(REFUNDS.replace("tool_calls: {route: release}\n", ""))
    calls = toolcalls.found(answer(call("lookup", {})))
    assert spec.route(None, {}, [], calls).route == Route.HOLD  # no verdict: unscored, held
    assert spec.route(0.95, {}, [], calls).route == Route.RELEASE
    held = spec.route(0.5, {}, [], calls)
    assert (held.route, held.tier) == (Route.HOLD, "agent") and "confidence 0.500" in held.reason


def test_the_bundled_policy_releases_no_tool_call_unscored() -> None:
    bundled = policy.load(None)
    calls = toolcalls.found(answer(call("lookup", {})))
    assert bundled.route(None, {}, [], calls).route == Route.HOLD
    assert bundled.route(0.5, {}, [], calls).route == Route.HOLD
    assert bundled.route(0.95, {}, [], calls).route == Route.RELEASE  # the judge was sure


STRUCTURED = {"type": "function", "function": {"name": "City", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("tool_choice", [{"type": "function", "function": {"name": "City"}}, "required"])
def test_a_structured_output_asked_as_a_forced_tool_call_is_an_answer_not_an_action(tool_choice: object) -> None:
    spec = policy.parse(REFUNDS)  # releases tool calls that no rule names
    calls = toolcalls.found(answer(call("City", {"name": "Paris", "population": 42})))
    request = {"tools": [STRUCTURED], "tool_choice": tool_choice}
    assert toolcalls.structured_output(request)
    unsure = spec.route(0.1, request, [], calls)
    assert unsure.route == Route.HOLD and "confidence" in unsure.reason  # routed by confidence, not released
    assert spec.route(None, request, [], calls).route == Route.HOLD
    # Two tools, or one not forced: the calls are actions, and the operator's outcome releases them.
    assert not toolcalls.structured_output({"tools": [STRUCTURED], "tool_choice": "auto"})
    assert not toolcalls.structured_output({"tools": [STRUCTURED, STRUCTURED], "tool_choice": "required"})
    assert spec.route(0.1, {"tools": [STRUCTURED]}, [], calls).route == Route.RELEASE


def test_the_judge_reads_a_call_with_its_tools_description() -> None:
    calls = toolcalls.found(answer(call("issue_refund", {"order_id": "42", "amount": 900})))
    request = {"tools": [{"type": "function", "function": {"name": "issue_refund", "description": "Refund an order."}}]}
    assert toolcalls.judged(calls, request) == (
        'Call the tool `issue_refund` (Refund an order.) with the arguments {"order_id": "42", "amount": 900}.'
    )


def _bundled() -> str:
    return policy.DEFAULT_POLICY.read_text()


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("{response.content: x}", "only through `response.tool_calls.`"),
        ("{response.tool_calls.arguments.amount: {}}", "needs one of gt, gte, lt, lte, matches"),
        ('{response.tool_calls.name: {matches: "("}}', "not a regular expression"),
        ("{response.tool_calls.arguments.amount: {above: 3}}", "amount.above: Extra inputs are not permitted"),
    ],
)
def test_bad_rules_name_the_line(when: str, message: str) -> None:
    spec = REFUNDS.split("rules:")[0] + f"rules:\n  - name: bad\n    when: {when}\n    route: release\n"
    with pytest.raises(PolicyError, match=message) as caught:
        policy.parse(spec, "p.yaml")
    assert str(caught.value).startswith("p.yaml line 10: rules.0.when")


def test_through_the_api(
    make_settings: Any, api_key: str, upstream: factories.UpstreamMock, tmp_path: Any, database_url: str
) -> None:
    from gateway.app import create_app

    path = tmp_path / "policy.yaml"
    path.write_text(REFUNDS)
    tools = [{"type": "function", "function": {"name": "issue_refund", "parameters": {"type": "object"}}}]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Refund me"}], "tools": tools, "hitl": {"wait": 0}}
    headers = {"Authorization": f"Bearer {api_key}"}
    with TestClient(create_app(make_settings(policy_path=path))) as client:
        upstream.answer(answer(call("issue_refund", {"amount": 20})))
        small = client.post("/v1/chat/completions", json=body, headers=headers).json()
        assert small["hitl"]["status"] == "released"
        assert small["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "issue_refund"
        upstream.answer(answer(call("issue_refund", {"amount": 500})))
        big = client.post("/v1/chat/completions", json=body, headers=headers)
        assert big.json()["hitl"]["status"] == "pending" and big.json()["hitl"]["tier"] == "senior"
        assert "tool_calls" not in big.json()["choices"][0]["message"]  # the unreviewed call never goes out
        assert big.headers["x-hitl-review-id"] == big.json()["hitl"]["review_id"]
        upstream.answer(answer(call("issue_refund", "{amount: 5")))
        broken = client.post("/v1/chat/completions", json=body, headers=headers).json()
        assert broken["hitl"]["status"] == "pending" and broken["hitl"]["tier"] == "agent"
    from sqlmodel import col, select

    from gateway.models import Exchange

    with factories.sync_session(database_url) as session:
        stored = session.exec(select(Exchange).order_by(col(Exchange.created_at))).all()
    assert [exchange.status for exchange in stored] == ["released", "held", "held"]
    assert toolcalls.MALFORMED in stored[2].signals["missing"] and "big-refund" in stored[1].reason
