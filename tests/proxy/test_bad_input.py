"""Bad input gets a clear 400 or 404 in the OpenAI shape, never a 500, and the keep-alive connection lives."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests import factories
from tests.factories import MODEL

GOOD = '"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]'
BAD_BODIES = {
    "deeply nested pass-through field": "{" + GOOD + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "nested past the gateway's limit": "{" + GOOD + ', "x": ' + "[" * 200 + "]" * 200 + "}",
    "deeply nested content part": '{"model": "support-bot", "messages": [{"role": "user", "content": ['
    + '{"a": ' * 5000
    + "1"
    + "}" * 5000
    + "]}]}",
    "lone surrogate in content": '{"model": "support-bot", "messages": [{"role": "user", "content": "\\ud800"}]}',
    "lone low surrogate in a key": "{" + GOOD + ', "\\udc00": 1}',
    "lone surrogate in metadata": "{" + GOOD + ', "metadata": {"k": "\\ud800"}}',
    "lone surrogate in the model": '{"model": "\\udbff", "messages": [{"role": "user", "content": "hi"}]}',
    "NaN in a pass-through field": "{" + GOOD + ', "temperature": NaN}',
    "Infinity in a pass-through field": "{" + GOOD + ', "x": Infinity}',
    "-Infinity in a pass-through field": "{" + GOOD + ', "x": -Infinity}',
    "a number too large for a double": "{" + GOOD + ', "x": 1e999}',
    "NaN in hitl.wait": "{" + GOOD + ', "hitl": {"wait": NaN}}',
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_are_a_400_on_a_living_connection(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, body: str
) -> None:
    upstream.answer()
    headers = {"Authorization": f"Bearer {api_key}", "content-type": "application/json"}
    response = client.post("/v1/chat/completions", content=body.encode("utf-8", "surrogatepass"), headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json" and error["message"]
    assert not upstream.chat.called
    # The same connection still answers (a 500 would have dropped it).
    ok = client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, headers=headers
    )
    assert ok.status_code == 200


@pytest.mark.parametrize("review_id", ["rev-%00", "%00", "rev-a%00b", "rev-%EF%BF%BF"])
def test_strange_review_ids_are_a_404(client: TestClient, api_key: str, review_id: str) -> None:
    response = client.get(f"/v1/reviews/{review_id}", headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


def test_a_nul_in_content_is_kept_where_the_database_allows(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    upstream.answer()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "a\u0000b"}]}
    response = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200, response.text
    assert upstream.sent()["messages"][0]["content"] == "a\u0000b"


@pytest.mark.parametrize("path", ["/console/reviews/rev-%00", "/console/reviews/%00x"])
def test_strange_review_ids_in_the_console_are_a_404_page(
    client: TestClient, agent: tuple[str, str], path: str
) -> None:
    factories.console_login(client, *agent)
    response = client.get(path)
    assert response.status_code == 404 and response.template.name == "error.html"  # type: ignore[attr-defined]
