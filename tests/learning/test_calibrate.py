"""The learning loop: audit samples of released answers, labels from decisions, `hitl calibrate`, and the
stored calibrator scoring new exchanges."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlmodel import select
from typer.testing import CliRunner

from gateway import db, policy
from gateway.app import create_app
from gateway.cli import app as cli
from gateway.learning import fitting
from gateway.models import (
    Action,
    Agent,
    ApiKey,
    Calibration,
    Decision,
    Exchange,
    ExchangeStatus,
    PreferencePair,
    Review,
    ReviewKind,
    Role,
    utcnow,
)
from gateway.review import decisions
from gateway.review.sandbox import Sandbox
from gateway.review.tiers import Tiers
from gateway.scoring.calibrator import Calibrator
from gateway.settings import AuditSettings
from tests import factories
from tests.factories import MODEL

runner = CliRunner()
QUESTION = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]}


def ids(url: str) -> tuple[int, int]:
    with factories.sync_session(url) as session:
        key = session.exec(select(ApiKey)).first()
        agent = session.exec(select(Agent)).first()
        assert key is not None and agent is not None and key.id and agent.id
        return key.id, agent.id


def seed_labels(url: str, count: int, audited_every: int = 0, seed: int = 1) -> None:
    """`count` decisions where higher raw confidence means more approvals, as with a useful signal."""
    factories.make_api_key(url)
    factories.make_agent(url, "ada", "correct horse", Role.AGENT)
    key_id, agent_id = ids(url)
    rng = random.Random(seed)
    for index in range(count):
        raw = rng.random()
        action = Action.APPROVE if rng.random() < raw**2 else rng.choice([Action.EDIT, Action.OVERRIDE])
        audited = audited_every and index % audited_every == 0
        factories.make_labelled(
            url, raw, action, api_key_id=key_id, agent_id=agent_id, audit_rate=0.05 if audited else None
        )


TIERS = Tiers(held=("agent", "senior"), audit="audit")


async def decide(url: str, review_id: str, action: Action, text: str | None) -> decisions.Decided:
    """Decide as agent ada through the decision service, on an engine of this test's own loop."""
    engine = db.create_engine(url)
    try:
        sessions = db.session_factory(engine)
        async with sessions() as session:
            ada = (await session.exec(select(Agent).where(Agent.username == "ada"))).one()
        async with sessions() as session:
            sandbox = Sandbox(seconds=10.0)
            try:
                return await decisions.decide(
                    session, TIERS, utcnow(), sandbox, review_id=review_id, agent=ada, action=action, text=text
                )
            finally:
                sandbox.close()
    finally:
        await engine.dispose()


# --- the audit sample -------------------------------------------------------------------------------


def test_released_answers_are_drawn_for_the_audit_queue(
    make_settings, api_key: str, database_url: str, upstream: factories.UpstreamMock, agent
) -> None:
    upstream.answer(factories.completion_body())
    with TestClient(create_app(make_settings(audit=AuditSettings(rate=1.0)))) as client:
        body = client.post("/v1/chat/completions", json=QUESTION, headers={"Authorization": f"Bearer {api_key}"}).json()
        # The client has its answer at once: an audit never holds anything.
        assert body["hitl"]["status"] == "released" and "review_id" not in body["hitl"]
        assert body["choices"][0]["message"]["content"] == "Paris is the capital of France."
        with factories.sync_session(database_url) as session:
            review = session.exec(select(Review)).one()
        assert (review.kind, review.tier, review.audit_rate, review.status) == (ReviewKind.AUDIT, "audit", 1.0, "open")

    decided = asyncio.run(decide(database_url, review.id, Action.EDIT, "Paris."))
    assert decided.pair is not None and decided.pair.chosen == "Paris."
    with factories.sync_session(database_url) as session:
        exchange = session.exec(select(Exchange)).one()
        assert session.exec(select(Decision)).one().action == Action.EDIT
        assert session.exec(select(PreferencePair)).one().rejected == "Paris is the capital of France."
    # What the client received stays what it received.
    assert exchange.status == ExchangeStatus.RELEASED and exchange.final_text is None


def test_no_audit_draws_at_rate_zero(make_settings, api_key: str, database_url: str, upstream) -> None:
    upstream.answer(factories.completion_body())
    with TestClient(create_app(make_settings(audit=AuditSettings(rate=0.0)))) as client:
        for _ in range(5):
            client.post("/v1/chat/completions", json=QUESTION, headers={"Authorization": f"Bearer {api_key}"})
    with factories.sync_session(database_url) as session:
        assert session.exec(select(Review)).all() == []
        assert len(session.exec(select(Exchange)).all()) == 5


def test_audit_default_rate_is_two_percent() -> None:
    assert AuditSettings().rate == 0.02


# --- labels -----------------------------------------------------------------------------------------


def test_labels_and_audit_weights(database_url: str) -> None:
    factories.make_api_key(database_url)
    factories.make_agent(database_url)
    key_id, agent_id = ids(database_url)
    factories.make_labelled(database_url, 0.9, Action.APPROVE, api_key_id=key_id, agent_id=agent_id)
    factories.make_labelled(database_url, 0.4, Action.EDIT, api_key_id=key_id, agent_id=agent_id)
    factories.make_labelled(database_url, 0.6, Action.OVERRIDE, api_key_id=key_id, agent_id=agent_id)
    factories.make_labelled(database_url, 0.97, Action.APPROVE, api_key_id=key_id, agent_id=agent_id, audit_rate=0.02)
    factories.make_labelled(database_url, None, Action.APPROVE, api_key_id=key_id, agent_id=agent_id)  # unscored
    found = factories.labels_in(database_url)
    assert found.raw == [0.9, 0.4, 0.6, 0.97]
    assert found.labels == [1, 0, 0, 1]
    assert found.weights == [1.0, 1.0, 1.0, pytest.approx(50.0)]
    assert found.audited == [False, False, False, True]


def test_too_few_labels_are_refused(database_url: str) -> None:
    seed_labels(database_url, 30)
    found = factories.labels_in(database_url)
    with pytest.raises(fitting.NotEnoughLabels, match="only 30 labelled exchanges .* at least 100"):
        fitting.fit_labels(found, "isotonic", 100, 0.2, 0.02)


# --- hitl calibrate ---------------------------------------------------------------------------------


def test_calibrate_refuses_below_the_minimum(env: str) -> None:
    seed_labels(env, 20)
    result = runner.invoke(cli, ["calibrate"])
    assert result.exit_code == 1
    assert "only 20 labelled exchanges" in result.output and "--min-labels" in result.output


def test_calibrate_prints_figures_and_stores_a_calibrator(env: str) -> None:
    seed_labels(env, 300, audited_every=10)
    result = runner.invoke(cli, ["calibrate", "--target-review-rate", "0.3", "--target-escaped-error", "0.1"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "pooled: 300 labels (" in out and "30 from audits" in out
    assert "AUROC" in out and "ECE" in out and "Brier" in out
    assert "for a review rate of 30%" in out and "for an escaped-error rate of 10.0%" in out
    with factories.sync_session(env) as session:
        [stored] = session.exec(select(Calibration)).all()
    assert stored.method == "isotonic" and stored.labels == 300 and f"stored calibrator cal-{stored.id}" in out
    # The signal is informative, so the held-out AUROC is well above chance, and the figures are kept.
    assert stored.metrics["after_cross_validated"]["auroc"] > 0.7
    assert stored.metrics["audited"] == 30
    # What it was fitted on, per band, for the Insights page's drift: shares of the traffic the labels stand for.
    fit = stored.metrics["bands_at_fit"]
    assert len(fit) == 10 and sum(band["share"] for band in fit) == pytest.approx(1.0)
    assert all(band["right"] is None or 0 <= band["right"] <= 1 for band in fit)


def test_calibrate_dry_run_stores_nothing(env: str) -> None:
    seed_labels(env, 150)
    result = runner.invoke(cli, ["calibrate", "--dry-run", "--method", "logistic", "--min-labels", "50"])
    assert result.exit_code == 0, result.output
    assert "logistic (5-fold held-out)" in result.output
    with factories.sync_session(env) as session:
        assert session.exec(select(Calibration)).all() == []


def test_written_policy_routes_through_the_stored_calibrator(
    env: str, tmp_path: Path, make_settings, upstream: factories.UpstreamMock
) -> None:
    seed_labels(env, 300)
    target = tmp_path / "policy.yaml"
    result = runner.invoke(
        cli, ["calibrate", "--write-policy", str(target), "--apply", "review-rate", "--target-review-rate", "0.25"]
    )
    assert result.exit_code == 0, result.output
    written = policy.load(target)
    with factories.sync_session(env) as session:
        stored = session.exec(select(Calibration)).one()
    assert written.calibrator == stored.id
    assert written.spec.version == f"default-3+cal-{stored.id}"
    release = written.spec.bands[0]
    assert release.route == "release" and release.min == pytest.approx(stored.metrics["by_review_rate"]["threshold"])
    assert target.read_text().startswith("# Written by `hitl calibrate`")
    assert [rule.name for rule in written.spec.rules] == ["high-stakes"]  # the rules carry over

    upstream.answer(factories.completion_body("Paris.", logprob=-0.3))
    api_key = factories.make_api_key(env, "second")
    with TestClient(create_app(make_settings(policy_path=target))) as client:
        body = client.post(
            "/v1/chat/completions",
            json={**QUESTION, "hitl": {"wait": 0}},
            headers={"Authorization": f"Bearer {api_key}"},
        ).json()
    with factories.sync_session(env) as session:
        exchange = session.exec(select(Exchange).where(Exchange.request_id != "req")).one()  # not a seeded one
    raw = exchange.signals["raw_confidence"]
    expected = Calibrator("isotonic", stored.params).predict([raw])[0]
    assert exchange.calibrator == f"cal-{stored.id}" and exchange.signals["calibrator"] == f"cal-{stored.id}"
    assert exchange.confidence == pytest.approx(expected) and body["hitl"]["confidence"] == pytest.approx(expected)
    assert exchange.policy_version == written.version


def test_policy_naming_a_missing_calibrator_stops_start_up(make_settings, tmp_path: Path) -> None:
    text = policy.DEFAULT_POLICY.read_text().replace("# calibrator: 1", "calibrator: 999")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(policy.PolicyError, match="calibrator 999, which is not in the database"):
        with TestClient(create_app(make_settings(policy_path=path))):
            pass


def test_recalibrated_policy_drops_hold_bands_above_the_new_release() -> None:
    current = policy.load(None)
    source = policy.DEFAULT_POLICY.read_text()
    text = policy.recalibrated(current, source, policy.Fit(4, 0.25), "note")
    data = yaml.safe_load(text)
    assert [band["min"] for band in data["bands"]] == [0.25, 0.0]  # the agent band (from 0.30) is gone
    assert data["calibrator"] == 4 and data["version"] == "default-3+cal-4"


def test_recalibrated_policy_that_would_not_load_is_refused() -> None:
    text = """\
version: odd
tiers: [agent, senior]
bands:
  - {min: 0.95, route: hold, tier: senior}
  - {min: 0.8, route: release}
  - {min: 0.0, route: hold, tier: agent}
unscored: {route: hold, tier: agent}
"""
    with pytest.raises(policy.PolicyError, match="bands must be listed from the highest"):
        policy.recalibrated(policy.parse(text), text, policy.Fit(5, 0.97), "note")
