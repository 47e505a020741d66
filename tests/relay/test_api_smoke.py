from fastapi.testclient import TestClient

from tests import factories
from tests.factories import MODEL


def test_confident_answer_is_released(client: TestClient, api_key: str, upstream) -> None:
    upstream.answer(factories.completion_body())
    response = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["hitl"]["status"] == "released"
    assert body["choices"][0]["message"]["content"] == "Paris is the capital of France."
    assert response.headers["x-request-id"]
