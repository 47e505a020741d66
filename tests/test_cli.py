"""The `hitl` command, run in-process with typer's runner against a real database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app as cli
from gateway.models import Agent, ApiKey
from gateway.relay import apikeys
from tests import factories
from tests.factories import MODEL, console_login

runner = CliRunner()


def rows(url: str, model: type) -> list:
    with factories.sync_session(url) as session:
        return list(session.exec(select(model)).all())


def test_keys_create_stores_only_a_hash(env: str) -> None:
    result = runner.invoke(cli, ["keys", "create", "billing-bot"])
    assert result.exit_code == 0, result.output
    plaintext = result.output.strip()
    assert plaintext.startswith("hitl-") and len(plaintext) > 40
    [key] = rows(env, ApiKey)
    assert key.name == "billing-bot" and key.key_hash == apikeys.hash_key(plaintext) and plaintext not in key.key_hash
    listing = runner.invoke(cli, ["keys", "list"])
    assert "billing-bot" in listing.output and plaintext not in listing.output


def test_disabled_key_is_refused_once_the_key_cache_runs_out(env: str, make_settings) -> None:
    plaintext = runner.invoke(cli, ["keys", "create", "leaked"]).output.strip()
    clock = factories.ManualClock()
    with TestClient(create_app(make_settings(), clock=clock)) as client:
        headers = {"Authorization": f"Bearer {plaintext}"}
        assert client.get("/v1/models", headers=headers).status_code == 200
        assert runner.invoke(cli, ["keys", "disable", "1"]).exit_code == 0
        clock.advance(make_settings().key_cache_seconds)
        refused = client.get("/v1/models", headers=headers)
        assert refused.status_code == 401 and "Incorrect API key" in refused.json()["error"]["message"]
    missing = runner.invoke(cli, ["keys", "disable", "99"])
    assert missing.exit_code == 1 and "No API key" in missing.output


def test_without_a_key_cache_a_disabled_key_is_refused_at_once(env: str, make_settings) -> None:
    plaintext = runner.invoke(cli, ["keys", "create", "leaked"]).output.strip()
    with TestClient(create_app(make_settings(key_cache_seconds=0))) as client:
        headers = {"Authorization": f"Bearer {plaintext}"}
        assert client.get("/v1/models", headers=headers).status_code == 200
        assert runner.invoke(cli, ["keys", "disable", "1"]).exit_code == 0
        assert client.get("/v1/models", headers=headers).status_code == 401


def test_users_add_and_passwd(env: str) -> None:
    assert runner.invoke(cli, ["users", "add", "lin", "--role", "senior", "--password", "long enough"]).exit_code == 0
    [agent] = rows(env, Agent)
    assert agent.role == "senior" and agent.password_hash.startswith("$argon2")
    duplicate = runner.invoke(cli, ["users", "add", "lin", "--password", "long enough"])
    assert duplicate.exit_code == 1 and "already" in duplicate.output
    short = runner.invoke(cli, ["users", "passwd", "lin", "--password", "short"])
    assert short.exit_code == 1 and "at least 8" in short.output
    assert runner.invoke(cli, ["users", "passwd", "lin", "--password", "another one"]).exit_code == 0


def test_bad_configuration_is_a_clear_error(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_UPSTREAMS", '[{"name": "x", "provider": "openai"}]')
    result = runner.invoke(cli, ["keys", "list"])
    assert result.exit_code == 1 and "needs api_base" in result.output


def test_export_dpo_is_trl_conversational(
    env: str, make_settings, upstream: factories.UpstreamMock, tmp_path: Path
) -> None:
    key = factories.make_api_key(env)
    factories.make_agent(env, "ada", "correct horse")
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    with TestClient(create_app(make_settings())) as client:
        token = console_login(client, "ada", "correct horse")
        for action, text in (("edit", "Paris."), ("override", "Please ask a human."), ("approve", None)):
            hitl = client.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": prompt, "hitl": {"wait": 0}},
                headers={"Authorization": f"Bearer {key}"},
            ).json()["hitl"]
            data = {"action": action, "csrftoken": token} | ({"text": text} if text else {})
            assert (
                client.post(
                    f"/console/reviews/{hitl['review_id']}/decide", data=data, follow_redirects=False
                ).status_code
                == 303
            )

    out = tmp_path / "dpo.jsonl"
    # The same prompt three times: both pairs only with --keep-duplicates (else the newest alone).
    result = runner.invoke(cli, ["export", "--format", "dpo", "--output", str(out), "--keep-duplicates"])
    assert result.exit_code == 0, result.output
    lines = sorted(
        (json.loads(line) for line in out.read_text().splitlines()), key=lambda row: len(row["chosen"][0]["content"])
    )
    assert lines == [
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "Paris."}],
            "rejected": [{"role": "assistant", "content": "Lyon."}],
        },
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "Please ask a human."}],
            "rejected": [{"role": "assistant", "content": "Lyon."}],
        },
    ]
    assert '"train": 2' in result.output and '"not_a_pair": 1' in result.output  # the summary, on stderr
    to_stdout = runner.invoke(cli, ["export"])
    assert to_stdout.stdout.count('"chosen"') == 1 and '"duplicate_prompt": 1' in to_stdout.stderr


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--format", "csv"], "Unknown export format 'csv'; the formats are dpo, dpo-standard, kto"),
        (["--tag", "rude"], "unknown reason tags ['rude']"),
        (["--action", "escalate"], "do not close a review"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "since must be before until"),
        (["--test-size", "0.2"], "a split writes two files: give --output"),
        (["--chat-template", "/nonexistent/template.jinja"], "Cannot read the chat template"),
    ],
)
def test_a_bad_export_option_is_a_clear_error(env: str, arguments: list[str], says: str) -> None:
    result = runner.invoke(cli, ["export", *arguments])
    assert result.exit_code == 1 and says in result.output, result.output


def test_first_run_bootstrap_creates_admin_and_demo_key_once(env: str) -> None:
    from gateway.cli import _bootstrap, _run
    from gateway.settings import Settings

    settings = Settings()
    lines = _run(settings, _bootstrap)
    assert lines[0].startswith("  First admin login:  admin / ") and lines[1].startswith(
        "  Agent login:        agent / "
    )
    assert lines[2].startswith("  Demo API key:       hitl-")
    assert {(found.username, found.role) for found in rows(env, Agent)} == {("admin", "admin"), ("agent", "agent")}
    assert _run(settings, _bootstrap) == []
