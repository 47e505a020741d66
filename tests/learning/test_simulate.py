"""`hitl simulate`: what another release threshold would have cost the stored history, and the policy written with
its release band moved, through the same checks as `hitl calibrate --write-policy`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gateway import policy
from gateway.cli import app as cli
from tests import factories

runner = CliRunner()
WEEK = ["--since", factories.WEEK["since"], "--until", factories.WEEK["until"]]


def test_simulate_prints_both_thresholds_and_writes_the_moved_policy(env: str, tmp_path: Path) -> None:
    factories.seed_scores(env)
    written = tmp_path / "policy.yaml"
    result = runner.invoke(cli, ["simulate", "--release", "0.6", *WEEK, "--write-policy", str(written)])
    assert result.exit_code == 0, result.output
    assert "10 scored exchanges" in result.output and "7 decisions timed, median 30 s" in result.output
    policy_line, asked_line = (
        line for line in result.output.splitlines() if line.rstrip().endswith(")") and "(" in line and "%" in line
    )
    assert policy_line.split()[:3] == ["0.920", "90.0%", "9"] and policy_line.endswith("(policy)")
    assert asked_line.split()[:5] == ["0.600", "60.0%", "6", "0.1", "20.00%"] and asked_line.endswith("(asked)")
    moved = policy.load(written)  # it loads, and routes at the new threshold
    assert moved.route(0.65, {}, []).route == "release" and moved.route(0.55, {}, []).tier == "agent"
    assert moved.version.startswith("default-3+release-0.6@")
    assert written.read_text().startswith("# Written by `hitl simulate`")


def test_simulate_refuses_to_move_a_group_without_its_own_bands(env: str, tmp_path: Path) -> None:
    written = tmp_path / "policy.yaml"
    result = runner.invoke(cli, ["simulate", "--release", "0.6", "--model", "support-bot", "--write-policy",
                                 str(written)])  # fmt: skip
    assert result.exit_code != 0 and "no bands of its own" in result.output and not written.exists()


def test_a_groups_own_bands_move_and_the_rest_stay(tmp_path: Path) -> None:
    text = policy.DEFAULT_POLICY.read_text() + (
        "models:\n  support-bot: {calibrator: 2, bands: [{min: 0.85, route: release}, "
        "{min: 0.0, route: hold, tier: agent}]}\ncalibrator: 1\n"
    )
    moved = yaml.safe_load(policy.rethresholded(policy.parse(text), text, 0.7, "note", "support-bot"))
    assert moved["models"]["support-bot"]["bands"][0] == {"min": 0.7, "route": "release"}
    assert moved["bands"][0]["min"] == 0.92  # the policy's own bands are untouched


@pytest.mark.parametrize(("flag", "value"), [("--release", "1.5"), ("--since", "last week")])
def test_a_bad_simulate_option_is_said(env: str, flag: str, value: str) -> None:
    arguments = ["simulate", "--release", "0.6", flag, value] if flag != "--release" else ["simulate", flag, value]
    result = runner.invoke(cli, arguments)
    assert result.exit_code != 0 and ("since" in result.output or "release" in result.output), result.output
