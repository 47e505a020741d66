"""Policy files: routing, versions, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway import policy
from gateway.app import create_app
from gateway.models import Exchange, Route
from tests import factories
from tests.factories import MODEL

GOOD = """\
version: team-7
tiers: [agent, senior, legal]
bands:
  - {min: 0.8, route: release}
  - {min: 0.0, route: hold, tier: agent}
unscored: {route: hold, tier: senior}
rules:
  - name: legal-questions
    when: {metadata.topic: [contract, lawsuit], metadata.region: eu}
    route: hold
    tier: legal
"""


@pytest.mark.parametrize(
    ("confidence", "route", "tier"),
    [
        (0.95, Route.RELEASE, None),
        (0.92, Route.RELEASE, None),
        (0.91, Route.HOLD, "agent"),
        (0.30, Route.HOLD, "agent"),
        (0.29, Route.HOLD, "senior"),
        (0.0, Route.HOLD, "senior"),
    ],
)
def test_default_bands(confidence: float, route: Route, tier: str | None) -> None:
    routing = policy.load(None).route(confidence, {}, [])
    assert (routing.route, routing.tier) == (route, tier)


def test_band_reason_names_the_band() -> None:
    default = policy.load(None)
    assert default.route(0.8, {}, []).reason == "confidence 0.800 in [0.3, 0.92) -> agent"
    assert default.route(0.95, {}, []).reason == "confidence 0.950 in [0.92, 1] -> release"


def test_rules_match_on_request_metadata() -> None:
    custom = policy.parse(GOOD)
    eu_contract = {"metadata": {"topic": "contract", "region": "eu"}}
    assert custom.route(0.99, eu_contract, []).tier == "legal"
    assert "legal-questions" in custom.route(0.99, eu_contract, []).reason
    assert custom.route(0.99, {"metadata": {"topic": "contract", "region": "us"}}, []).route == Route.RELEASE
    assert custom.route(None, {}, ["logprobs:not_returned"]).tier == "senior"
    assert custom.version.startswith("team-7@")


def test_version_changes_with_content() -> None:
    assert policy.parse(GOOD).version != policy.parse(GOOD.replace("0.8", "0.85")).version


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("tiers: [agent\nbands: []\n", 2, "not valid YAML"),
        (GOOD.replace("route: release}", "route: releese}"), 4, "bands.0.route"),
        (GOOD.replace("tier: legal", "tier: lawyers"), 11, "lawyers"),
        (GOOD.replace("{min: 0.0, route: hold, tier: agent}", "{min: 0.1, route: hold, tier: agent}"), 5, "min: 0.0"),
        (GOOD.replace("{min: 0.0, route: hold, tier: agent}", "{min: 0.9, route: hold, tier: agent}"), 5, "highest"),
        (GOOD.replace("{min: 0.8, route: release}", "{min: 1.5, route: release}"), 4, "bands.0.min"),
        (GOOD.replace("unscored: {route: hold, tier: senior}", "unscored: {route: hold}"), 6, "needs a `tier`"),
        (GOOD + "surprise: 1\n", 12, "surprise"),
        ("- just\n- a list\n", 1, "mapping"),
    ],
)
def test_bad_policy_names_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(policy.PolicyError) as caught:
        policy.parse(text, "team.yaml")
    message = str(caught.value)
    assert message.startswith(f"team.yaml line {line}:"), message
    assert words in message


STREAMING = (
    GOOD
    + """\
  - name: live-chat
    when: {metadata.channel: web}
    stream: progressive
  - name: email
    when: {metadata.channel: email}
    stream: buffered
"""
)


def test_a_stream_rule_chooses_how_the_streams_it_matches_flow_and_routes_nothing() -> None:
    custom = policy.parse(STREAMING)
    web, email = {"metadata": {"channel": "web"}}, {"metadata": {"channel": "email"}}
    assert custom.progressive(web) and not custom.progressive(email) and not custom.progressive({})
    assert custom.route(0.5, web, []).reason.startswith("confidence")  # the bands route it, not the rule
    # A request a routing rule matches is decided whole; so are structured outputs and n > 1.
    legal = {"metadata": {"channel": "web", "topic": "contract", "region": "eu"}}
    assert not custom.progressive(legal) and custom.route(0.99, legal, []).tier == "legal"
    assert not custom.progressive({**web, "response_format": {"type": "json_object"}})
    assert not custom.progressive({**web, "n": 2})
    everywhere = policy.parse(STREAMING + "stream: progressive\n")
    assert everywhere.progressive({}) and not everywhere.progressive(email)  # the rule over the policy's choice


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ("    when: {metadata.channel: web}\n    stream: progressive\n    route: release\n", "either routes"),
        ("    when: {metadata.channel: web}\n    stream: progressive\n    tier: agent\n", "either routes"),
        ("    when: {response.tool_calls.name: refund}\n    stream: progressive\n", "request only"),
        ("    when: {metadata.channel: web}\n", "needs a `route`"),
        ("    when: {metadata.channel: web}\n    stream: sometimes\n", "rules.1.stream"),
    ],
)
def test_a_bad_stream_rule_names_its_line(rule: str, words: str) -> None:
    with pytest.raises(policy.PolicyError) as caught:
        policy.parse(GOOD + "  - name: bad\n" + rule, "team.yaml")
    message = str(caught.value)
    assert message.startswith("team.yaml line 1") and words in message, message


def test_bad_policy_file_stops_start_up(tmp_path: Path, make_settings) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD.replace("tier: legal", "tier: lawyers"))
    with pytest.raises(policy.PolicyError, match=r"policy.yaml line 11: rules.0.tier"):
        create_app(make_settings(policy_path=path))
    with pytest.raises(policy.PolicyError, match="cannot read"):
        create_app(make_settings(policy_path=tmp_path / "missing.yaml"))


def test_exchange_stores_policy_version_reason_and_signals(
    tmp_path: Path, make_settings, database_url: str, upstream: factories.UpstreamMock
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    key = factories.make_api_key(database_url)
    upstream.answer(factories.completion_body(logprob=None))
    with TestClient(create_app(make_settings(policy_path=path))) as client:
        result = client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "hitl": {"wait": 0}},
            headers={"Authorization": f"Bearer {key}"},
        ).json()
    assert result["hitl"]["tier"] == "senior"  # no logprobs: routed by `unscored`
    with factories.sync_session(database_url) as session:
        exchange = session.exec(select(Exchange)).one()
    assert exchange.policy_version == policy.parse(GOOD).version
    assert exchange.confidence is None and exchange.signals["missing"] == ["logprobs:not_returned"]
    assert exchange.reason == "unscored (logprobs:not_returned)"
    assert exchange.request["messages"][0]["content"] == "hi"
