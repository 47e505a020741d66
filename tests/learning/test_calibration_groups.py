"""Calibration per model and per signal set: each model's answers scored from its logprobs get a calibrator of
their own, the answers scored without logprobs (any model) another, and a group with too few labels takes the
pooled one; the policy routes each group by its own bands, and the review page says what made the confidence."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlmodel import select
from typer.testing import CliRunner

from gateway import policy
from gateway.app import create_app
from gateway.cli import app as cli
from gateway.models import Action, Calibration, Exchange, Role
from gateway.review.explanations import sentences
from gateway.settings import SelfCheckSettings, Settings, UpstreamSettings
from tests import factories
from tests.factories import MODEL, UPSTREAM

runner = CliRunner()
OTHER = "support-bot-large"
JUDGE_BASE = "http://judge.test/v1"


def seed(url: str, count: int, model: str, *, logprobs: bool = True, knee: float = 0.0, seed: int = 1) -> None:
    """`count` decisions on `model`'s answers: approved more often as the raw confidence rises past `knee`
    (a model whose raw confidence runs high has a high knee)."""
    key_id, agent_id = ids(url)
    rng = random.Random(seed)
    for _ in range(count):
        raw = rng.random()
        approved = rng.random() < max(0.0, (raw - knee) / (1 - knee)) ** 2
        action = Action.APPROVE if approved else Action.EDIT
        factories.make_labelled(url, raw, action, api_key_id=key_id, agent_id=agent_id, model=model, logprobs=logprobs)


def ids(url: str) -> tuple[int, int]:
    with factories.sync_session(url) as session:
        from gateway.models import Agent, ApiKey

        key = session.exec(select(ApiKey)).first()
        agent = session.exec(select(Agent)).first()
        if key is None or agent is None:
            factories.make_api_key(url, "labels")
            factories.make_agent(url, "ada", "correct horse", Role.AGENT)
            return ids(url)
        assert key.id and agent.id
        return key.id, agent.id


def test_each_label_knows_its_calibration_group(database_url: str) -> None:
    seed(database_url, 2, MODEL)
    seed(database_url, 2, OTHER)
    seed(database_url, 2, MODEL, logprobs=False)
    found = factories.labels_in(database_url)
    assert found.groups == [MODEL, MODEL, OTHER, OTHER, policy.NO_LOGPROBS, policy.NO_LOGPROBS]
    assert len(found.of_group(OTHER)) == 2 and found.of_group(OTHER).groups == [OTHER, OTHER]


def test_calibrate_fits_a_calibrator_per_model_and_falls_back_below_the_minimum(env: str, tmp_path: Path) -> None:
    seed(env, 200, MODEL, knee=0.0, seed=1)
    seed(env, 200, OTHER, knee=0.6, seed=2)  # runs high: only its surest answers are right
    seed(env, 30, MODEL, logprobs=False, seed=3)  # too few of its own
    target = tmp_path / "policy.yaml"
    result = runner.invoke(
        cli, ["calibrate", "--target-escaped-error", "0.1", "--write-policy", str(target)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "pooled: 430 labels" in out and f"group {MODEL}: 200 labels" in out and f"group {OTHER}: 200 labels" in out
    assert f"group {policy.NO_LOGPROBS}: scored by the pooled calibrator (only 30 labelled exchanges" in out
    with factories.sync_session(env) as session:
        stored = {row.metrics["group"]: row for row in session.exec(select(Calibration)).all()}
    assert set(stored) == {None, MODEL, OTHER}
    assert (stored[None].labels, stored[MODEL].labels, stored[OTHER].labels) == (430, 200, 200)

    written = policy.load(target)
    assert written.calibrator == stored[None].id
    assert written.calibrator_for(MODEL) == stored[MODEL].id and written.calibrator_for(OTHER) == stored[OTHER].id
    assert written.calibrator_for(policy.NO_LOGPROBS) == stored[None].id  # falls back to the pooled one
    for group in (MODEL, OTHER):
        release = written.bands_for(group)[0]
        assert release.route == "release"
        assert release.min == pytest.approx(stored[group].metrics["by_escaped_error"]["threshold"])
    # Each group's own threshold, not one for all: the model that runs high releases later on its own scale.
    assert written.bands_for(OTHER)[0].min != written.bands_for(MODEL)[0].min
    assert f"Group {MODEL}: calibrator cal-{stored[MODEL].id}" in target.read_text()


def test_calibrate_with_one_group_fits_only_the_pooled_calibrator(env: str) -> None:
    seed(env, 150, MODEL)
    result = runner.invoke(cli, ["calibrate", "--min-labels", "50"])
    assert result.exit_code == 0, result.output
    assert f"group {MODEL}: scored by the pooled calibrator (its labels are all the pooled ones)" in result.output
    with factories.sync_session(env) as session:
        assert len(session.exec(select(Calibration)).all()) == 1


POLICY_WITH_GROUPS = """\
version: per-model
calibrator: {pooled}
models:
  {model}:
    calibrator: {own}
    bands:
      - {{min: 0.5, route: release}}
      - {{min: 0.0, route: hold, tier: agent}}
tiers: [agent, senior]
bands:
  - {{min: 0.92, route: release}}
  - {{min: 0.3, route: hold, tier: agent}}
  - {{min: 0.0, route: hold, tier: senior}}
unscored: {{route: hold, tier: agent}}
"""


def store_isotonic(url: str, low: float, high: float) -> int:
    """A stored calibrator that maps every raw confidence into [low, high]."""
    with factories.sync_session(url) as session:
        row = Calibration(method="isotonic", params={"x": [0.0, 1.0], "y": [low, high]}, metrics={}, labels=0)
        session.add(row)
        session.commit()
        assert row.id is not None
        return row.id


def judge_elsewhere(make_settings: Callable[..., Settings], policy_path: Path) -> Settings:
    """The answering model sends no logprobs; the self-check asks another upstream, which does."""
    return make_settings(
        policy_path=policy_path,
        upstreams=[
            UpstreamSettings(name=MODEL, model="frontier", api_base=UPSTREAM, api_key="sk-a", logprobs=False),
            UpstreamSettings(name="judge", model="small-judge", api_base=JUDGE_BASE, api_key="sk-j"),
        ],
        selfcheck=SelfCheckSettings(mode="grey_zone", judge="judge"),
    )


def test_each_group_is_scored_by_its_own_calibrator_and_routed_by_its_own_bands(
    make_settings, env: str, tmp_path: Path, upstream: factories.UpstreamMock, api_key: str
) -> None:
    pooled, own = store_isotonic(env, 0.10, 0.20), store_isotonic(env, 0.90, 0.95)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_WITH_GROUPS.format(pooled=pooled, own=own, model=MODEL))
    headers = {"Authorization": f"Bearer {api_key}"}
    question = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "hitl": {"wait": 0}}

    upstream.answer(factories.completion_body("Paris.", logprob=-0.7))  # unsure words, the model's own scale
    with TestClient(create_app(make_settings(policy_path=path))) as client:
        body = client.post("/v1/chat/completions", json=question, headers=headers).json()
    assert body["hitl"]["status"] == "released"  # its group's calibrator (0.90+) and bands (release from 0.5)
    with factories.sync_session(env) as session:
        exchange = session.exec(select(Exchange).order_by(Exchange.created_at.desc())).first()  # type: ignore[union-attr]
    assert exchange is not None and exchange.calibrator == f"cal-{own}"
    assert (exchange.signals["calibration_group"], exchange.signals["calibrated_on"]) == (MODEL, MODEL)
    assert 0.9 <= exchange.confidence <= 0.95  # type: ignore[operator]

    # Without logprobs the judge decides (P(yes) 0.99 from the other upstream), and the pooled calibrator maps it.
    upstream.answer(factories.completion_body("Paris.", logprob=None))
    judge = upstream.router.post(f"{JUDGE_BASE}/chat/completions").mock(
        return_value=httpx.Response(200, json=factories.judge_reply(yes=0.99))
    )
    with TestClient(create_app(judge_elsewhere(make_settings, path))) as client:
        body = client.post("/v1/chat/completions", json=question, headers=headers).json()
    assert body["hitl"]["status"] == "pending" and body["hitl"]["tier"] == "senior"  # 0.2 in the pooled bands
    assert judge.call_count == 1 and json.loads(judge.calls.last.request.content)["model"] == "small-judge"
    assert "logprobs" not in upstream.sent()  # the answering model was not asked for what it cannot give
    with factories.sync_session(env) as session:
        exchange = session.exec(select(Exchange).where(Exchange.id == body["hitl"]["exchange_id"])).one()
    signals = exchange.signals
    assert exchange.calibrator == f"cal-{pooled}" and signals["calibrated_on"] == "pooled"
    assert signals["calibration_group"] == policy.NO_LOGPROBS and signals["decided_by"] == "selfcheck"
    assert signals["selfcheck"]["method"] == "logprobs" and signals["selfcheck"]["p_yes"] == pytest.approx(0.99)
    assert signals["missing"] == ["logprobs:not_returned"]  # what was missing, and why
    said = " ".join(sentences(exchange))
    assert "Not measured: the model sent no word probabilities." in said
    assert f"from the self-check, calibrated by cal-{pooled} (fitted on every model's answers)" in said


def test_a_group_s_bands_are_checked_like_the_policy_s(tmp_path: Path) -> None:
    text = POLICY_WITH_GROUPS.format(pooled=1, own=2, model=MODEL).replace(
        "{min: 0.0, route: hold, tier: agent}\ntiers", "{min: 0.1, route: hold, tier: agent}\ntiers"
    )
    with pytest.raises(policy.PolicyError, match=r"line 8: models.support-bot.bands.1.min: the last band must have"):
        policy.parse(text, "p.yaml")
    wrong_tier = POLICY_WITH_GROUPS.format(pooled=1, own=2, model=MODEL).replace(
        "tier: agent}\ntiers", "tier: x}\ntiers"
    )
    with pytest.raises(policy.PolicyError, match=r"models.support-bot.bands.1.tier: tier 'x' is not in tiers"):
        policy.parse(wrong_tier, "p.yaml")


def test_a_policy_naming_a_missing_group_calibrator_stops_start_up(make_settings, env: str, tmp_path: Path) -> None:
    pooled = store_isotonic(env, 0.1, 0.2)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_WITH_GROUPS.format(pooled=pooled, own=999, model=MODEL))
    with pytest.raises(policy.PolicyError, match="names calibrator 999, which is not in the database"):
        with TestClient(create_app(make_settings(policy_path=path))):
            pass


def test_recalibrated_policy_writes_bands_per_group() -> None:
    current = policy.load(None)
    text = policy.recalibrated(
        current, policy.DEFAULT_POLICY.read_text(), policy.Fit(4, 0.9), "note", {MODEL: policy.Fit(5, 0.2)}
    )
    data = yaml.safe_load(text)
    assert [band["min"] for band in data["bands"]] == [0.9, 0.3, 0.0]
    assert data["models"] == {
        MODEL: {
            "calibrator": 5,
            "bands": [{"min": 0.2, "route": "release"}, {"min": 0.0, "route": "hold", "tier": "senior"}],
        }
    }
