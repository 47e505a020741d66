"""`/metrics` as Prometheus scrapes it: what happened is counted, and labels stay bounded whatever clients send
(a model name the gateway does not declare is `other`; a path is never a label)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway import policy
from gateway.app import create_app
from gateway.settings import AuditSettings, Settings
from tests import factories
from tests.factories import MODEL

CONFIDENT = factories.completion_body("Paris is the capital of France.", logprob=-0.001)
UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)


def scraped(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_what_happened_is_counted(client: TestClient, api_key: str, upstream: factories.UpstreamMock) -> None:
    auth = {"Authorization": f"Bearer {api_key}", "x-hitl-wait": "0"}
    question = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}]}
    upstream.answer(CONFIDENT)
    client.post("/v1/chat/completions", json=question, headers=auth)
    upstream.answer(UNSURE)
    client.post("/v1/responses", json={"model": MODEL, "input": "Capital?"}, headers=auth)
    found = scraped(client)
    released = ("hitl_exchanges_total", (("dialect", "chat"), ("model", MODEL), ("outcome", "released")))
    held = ("hitl_exchanges_total", (("dialect", "responses"), ("model", MODEL), ("outcome", "held")))
    assert found[released] == 1 and found[held] == 1
    route = (("method", "POST"), ("route", "/v1/chat/completions"), ("status", "200"))
    assert found[("hitl_http_requests_total", route)] == 1
    assert found[("hitl_upstream_seconds_count", (("upstream", MODEL),))] == 2
    assert found[("hitl_deadline_outcomes_total", (("outcome", "placeholder"),))] == 1
    assert found[("hitl_open_reviews", (("tier", "senior"),))] == 1
    assert found[("hitl_waiting_clients", ())] == 0  # nobody waits any more


def test_audits_and_reused_answers_are_counted_as_such(
    make_settings: Callable[..., Settings], api_key: str, upstream: factories.UpstreamMock, senior, tmp_path
) -> None:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(policy.DEFAULT_POLICY.read_text() + "\nreuse: {}\n")
    auth = {"Authorization": f"Bearer {api_key}", "x-hitl-wait": "0"}
    question = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}]}
    with TestClient(create_app(make_settings(audit=AuditSettings(rate=1.0), policy_path=policy_path))) as client:
        upstream.answer(CONFIDENT)
        client.post("/v1/chat/completions", json=question, headers=auth)  # released, and drawn for audit
        upstream.answer(UNSURE)
        held = client.post("/v1/chat/completions", json=question, headers=auth).json()["hitl"]
        token = factories.console_login(client, *senior)  # held for seniors: the model was quite unsure
        client.post(
            f"/console/reviews/{held['review_id']}/decide",
            data={"action": "edit", "text": "Paris.", "csrftoken": token},
        )
        assert client.post("/v1/chat/completions", json=question, headers=auth).json()["hitl"]["status"] == "reused"
        found = scraped(client)
    counted = {
        dict(labels)["outcome"]: value for (name, labels), value in found.items() if name == "hitl_exchanges_total"
    }
    assert counted == {"audit": 1, "held": 1, "reused": 1}


def test_labels_stay_bounded_whatever_clients_send(
    make_settings: Callable[..., Settings], api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer(CONFIDENT)
    app = create_app(make_settings(default_upstream=MODEL))  # every model name is answered
    with TestClient(app) as client:
        found, text = _flooded(client, api_key)
    assert not [name for name in SENT if name in text]  # no model name, no path a client wrote
    requests = [labels for name, labels in found if name == "hitl_http_requests_total"]
    assert len(requests) <= 4, requests  # the chat route, the unmatched path, the scrape
    exchanges = {dict(labels)["model"] for name, labels in found if name == "hitl_exchanges_total"}
    assert exchanges == {"other"}
    assert found[("hitl_exchanges_total", (("dialect", "chat"), ("model", "other"), ("outcome", "released")))] == 1000


SENT = ["".join(random.Random(seed).choices(string.ascii_letters + string.digits, k=12)) for seed in range(1000)]


def _flooded(client: TestClient, api_key: str) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], str]:
    """1,000 requests for made-up models and 1,000 for made-up paths, then a scrape."""
    auth = {"Authorization": f"Bearer {api_key}"}
    for name in SENT:
        client.post("/v1/chat/completions", json={"model": name, "messages": [{"role": "user", "content": "x"}]},
                    headers=auth)  # fmt: skip
        client.get(f"/v1/{name}/{name}", headers=auth)
    return scraped(client), client.get("/metrics").text
