"""`hitl learn`: refit on every label, apply new thresholds only when the held-out escaped-error rate stays
within the target at the upper end of its confidence interval, record every proposal, and roll back in one
command; running gateways follow the version in force."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, select
from typer.testing import CliRunner

from gateway import policy
from gateway.app import create_app
from gateway.cli import LEARN_REFUSED
from gateway.cli import app as cli
from gateway.learning import metrics
from gateway.models import Action, Agent, ApiKey, Calibration, Exchange, PolicyVersion, PolicyVersionStatus, Role
from gateway.settings import LearnSettings
from tests import factories
from tests.factories import MODEL

runner = CliRunner()


def seed(url: str, count: int, *, informative: bool, seed: int = 1, audited_every: int = 0) -> None:
    """Labels whose raw confidence tells (above 0.6 an agent nearly always approves) or tells nothing."""
    factories.make_api_key(url, f"labels-{seed}")
    factories.make_agent(url, f"ada{seed}", "correct horse", Role.AGENT)
    with factories.sync_session(url) as session:
        key = session.exec(select(ApiKey).where(ApiKey.name == f"labels-{seed}")).one()
        agent = session.exec(select(Agent).where(Agent.username == f"ada{seed}")).one()
        assert key.id and agent.id
        ids = (key.id, agent.id)
    rng = random.Random(seed)
    for index in range(count):
        raw = rng.random()
        approve_rate = (0.995 if raw > 0.6 else 0.3) if informative else 0.5
        action = Action.APPROVE if rng.random() < approve_rate else Action.EDIT
        audited = audited_every and index % audited_every == 0
        factories.make_labelled(
            url, raw, action, api_key_id=ids[0], agent_id=ids[1], audit_rate=0.1 if audited else None
        )


def versions(url: str) -> list[PolicyVersion]:
    with factories.sync_session(url) as session:
        return list(session.exec(select(PolicyVersion).order_by(col(PolicyVersion.id))).all())


def test_learn_applies_thresholds_that_keep_the_escaped_error_target(env: str) -> None:
    seed(env, 600, informative=True, audited_every=20)
    result = runner.invoke(cli, ["learn", "--target-escaped-error", "0.1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [row] = versions(env)
    assert row.status == PolicyVersionStatus.APPLIED and row.labels == 600
    assert f"applied policy version #{row.id} ({row.version})" in result.output
    bound = row.figures["groups"]["pooled"]["bound"]
    assert bound["upper"] <= 0.1 and bound["escaped_error_rate"] <= bound["upper"]
    assert "upper bound" in result.output and "within 10.0%" in row.reason
    learned = policy.parse(row.text)
    with factories.sync_session(env) as session:
        stored = session.exec(select(Calibration)).one()
    assert learned.calibrator == stored.id and learned.spec.bands[0].min == pytest.approx(bound["threshold"])
    assert row.base == policy.load(None).version  # made from the bundled policy
    history = runner.invoke(cli, ["policy", "history"])
    assert history.exit_code == 0 and f"#{row.id}" in history.output and "applied" in history.output

    again = runner.invoke(cli, ["learn", "--target-escaped-error", "0.1"])
    assert again.exit_code == 0 and "no new labels since policy version" in again.output
    assert len(versions(env)) == 1


def test_learn_refuses_thresholds_that_break_the_target(env: str) -> None:
    seed(env, 400, informative=False)
    result = runner.invoke(cli, ["learn", "--target-escaped-error", "0.1"])
    assert result.exit_code == LEARN_REFUSED, result.output
    [row] = versions(env)
    assert row.status == PolicyVersionStatus.REFUSED and "not applied" in row.reason
    assert "no release threshold keeps the escaped-error rate" in result.output
    assert row.text == policy.DEFAULT_POLICY.read_text()  # what still routes: the policy as it was


def test_dry_run_records_nothing(env: str) -> None:
    seed(env, 600, informative=True)
    result = runner.invoke(cli, ["learn", "--dry-run", "--target-escaped-error", "0.1"])
    assert result.exit_code == 0 and "would apply: refitted on 600 labels" in result.output
    assert versions(env) == []


def exchange_policy(client: TestClient, api_key: str) -> str:
    body = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "hitl": {"wait": 0}},
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()
    with factories.sync_session(client.app.state.runtime.settings.database_url) as session:  # type: ignore[attr-defined]
        return session.exec(select(Exchange).where(Exchange.id == body["hitl"]["exchange_id"])).one().policy_version


def follows(client: TestClient, api_key: str, version: str) -> bool:
    """Whether the running gateway routes by `version` within a few refresh intervals."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if exchange_policy(client, api_key) == version:
            return True
        time.sleep(0.2)
    return False


def test_a_running_gateway_follows_learn_and_rollback(
    env: str, make_settings, upstream: factories.UpstreamMock, api_key: str
) -> None:
    upstream.answer(factories.completion_body("Paris."))
    file_version = policy.load(None).version
    with TestClient(create_app(make_settings(policy_refresh_seconds=0.1))) as client:
        assert exchange_policy(client, api_key) == file_version
        seed(env, 600, informative=True)
        assert runner.invoke(cli, ["learn", "--target-escaped-error", "0.1"]).exit_code == 0
        [row] = versions(env)
        assert follows(client, api_key, row.version)

        rolled = runner.invoke(cli, ["policy", "rollback"])
        assert rolled.exit_code == 0 and f"rolled back #{row.id}" in rolled.output and "the file" in rolled.output
        assert follows(client, api_key, file_version)
    assert versions(env)[0].status == PolicyVersionStatus.ROLLED_BACK
    nothing = runner.invoke(cli, ["policy", "rollback"])
    assert nothing.exit_code == 1 and "nothing to roll back" in nothing.output


def test_a_learned_version_rides_on_the_file_it_was_made_from(
    env: str,
    make_settings,
    upstream: factories.UpstreamMock,
    api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(env, 600, informative=True)
    assert runner.invoke(cli, ["learn", "--target-escaped-error", "0.1"]).exit_code == 0
    [row] = versions(env)
    upstream.answer(factories.completion_body("Paris."))
    with TestClient(create_app(make_settings())) as client:
        assert exchange_policy(client, api_key) == row.version  # in force from start-up
    edited = tmp_path / "policy.yaml"
    edited.write_text(policy.DEFAULT_POLICY.read_text().replace("senior: 600", "senior: 900"))
    with TestClient(create_app(make_settings(policy_path=edited))) as client:
        assert exchange_policy(client, api_key) == policy.load(edited).version  # the operator's new file
    # The same labels, a new file: `hitl learn` has something to do over it.
    monkeypatch.setenv("HITL_POLICY_PATH", str(edited))
    again = runner.invoke(cli, ["learn", "--target-escaped-error", "0.1"])
    assert again.exit_code == 0, again.output
    assert [row.base for row in versions(env)] == [policy.load(None).version, policy.load(edited).version]


def test_the_bound_is_wilson_s_on_the_effective_sample_size() -> None:
    # 100 released answers, 5 changed: Wilson's 95% interval is (2.2%, 11.2%).
    scores = [0.9] * 100 + [0.1] * 50
    labels = [0] * 5 + [1] * 95 + [1] * 50
    bound = metrics.escaped_error_bound(scores, labels, 0.5)
    assert bound.escaped_error_rate == pytest.approx(0.05)
    assert bound.upper == pytest.approx(0.1118, abs=1e-3) and bound.released == pytest.approx(100)
    assert bound.review_rate == pytest.approx(50 / 150)
    # The same answers where one audit stands for 50: the rate is weighted, the sample size is not 150.
    weighted = metrics.escaped_error_bound([0.9] * 3, [0, 1, 1], 0.5, weights=[1.0, 1.0, 50.0])
    assert weighted.escaped_error_rate == pytest.approx(1 / 52)
    assert weighted.released == pytest.approx(52**2 / (1 + 1 + 2500)) and weighted.upper > 0.3
    # The lowest threshold whose bound meets the target: the errors sit low, so releasing them all breaks it.
    scores = [0.9] * 100 + [0.1] * 50
    labels = [0] + [1] * 99 + [0] * 20 + [1] * 30
    assert metrics.escaped_error_bound(scores, labels, 0.1).upper > 0.06
    assert metrics.threshold_within_bound(scores, labels, 0.06) == metrics.escaped_error_bound(scores, labels, 0.9)
    assert metrics.threshold_within_bound(scores, labels, 0.05) is None  # 1 in 100: its bound is 5.4%


def test_serve_runs_learn_on_a_schedule_and_routes_by_what_it_applied(
    env: str, make_settings, upstream: factories.UpstreamMock, api_key: str
) -> None:
    seed(env, 600, informative=True)
    upstream.answer(factories.completion_body("Paris."))
    settings = make_settings(
        policy_refresh_seconds=0.1, learn=LearnSettings(every_seconds=0.5, target_escaped_error=0.1)
    )
    with TestClient(create_app(settings)) as client, TestClient(create_app(settings)):
        deadline = time.monotonic() + 60  # a turn is its own `hitl learn` process: seconds on a slow machine
        while not versions(env) and time.monotonic() < deadline:
            time.sleep(0.2)
        [row] = versions(env)  # one turn between two processes (the lease), and nothing new after it
        assert row.status == PolicyVersionStatus.APPLIED
        assert follows(client, api_key, row.version)
        time.sleep(1.5)  # more turns: no new labels, nothing recorded
    assert len(versions(env)) == 1


def test_a_threshold_below_a_failing_one_is_never_taken() -> None:
    """The fixed sequence stops at the first failure: the labels below it cannot buy a lucky pass."""
    scores = [0.9] * 100 + [0.5] * 20 + [0.1] * 400
    labels = [1] * 100 + [0] * 10 + [1] * 10 + [1] * 400
    assert metrics.escaped_error_bound(scores, labels, 0.1).upper < 0.05  # releasing all would pass on its own
    assert metrics.escaped_error_bound(scores, labels, 0.5).upper > 0.05
    assert metrics.threshold_within_bound(scores, labels, 0.05) == metrics.escaped_error_bound(scores, labels, 0.9)
    # Too few released for any bound to pass: the sequence begins lower down, where there are enough.
    assert metrics.threshold_within_bound([0.9] * 5 + [0.8] * 95, [1] * 100, 0.05).threshold == 0.8  # type: ignore[union-attr]
