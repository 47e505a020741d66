"""Bad input gets a clear 400 or 404 in the OpenAI shape, never a 500, and the keep-alive connection lives."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
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


async def test_a_client_gone_before_its_body_arrived_is_one_line_in_the_log(
    app: FastAPI, api_key: str, upstream: factories.UpstreamMock, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that hangs up halfway through sending its request is no error of the gateway's: one line says
    so, with the request id, and the upstream is never asked."""
    upstream.answer()
    messages: list[dict[str, object]] = [
        {"type": "http.request", "body": b'{"model": "support-bot", "mess', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        pass

    headers = [(b"authorization", f"Bearer {api_key}".encode()), (b"x-request-id", b"req-gone-1")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    caplog.set_level(logging.INFO)
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    gone = [record for record in caplog.records if "req-gone-1" in record.getMessage()]
    expected = "client_disconnected request_id=req-gone-1 path=/v1/chat/completions"
    assert [record.getMessage() for record in gone] == [expected]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert not upstream.chat.called


def test_an_unexpected_error_is_a_500_in_the_openai_shape_and_a_logged_traceback(
    app: FastAPI, api_key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(body: bytes, headers: object = None) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr("gateway.conversation.chat.parse", broken)
    headers = {"Authorization": f"Bearer {api_key}", "x-request-id": "req-bug-1"}
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/chat/completions", json={"model": MODEL}, headers=headers)
    assert response.status_code == 500 and response.headers["x-request-id"] == "req-bug-1"
    assert response.json()["error"]["type"] == "api_error"
    logged = [record for record in caplog.records if record.name == "hitl.errors"]
    assert [record.getMessage() for record in logged] == ["unhandled error on POST /v1/chat/completions"]
    assert logged[0].exc_info is not None and "a bug of ours" in str(logged[0].exc_info[1])
