"""Console failures are pages (or htmx toasts), never the API's JSON; the API keeps its JSON errors."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests import factories
from tests.factories import console_login


def is_error_page(response: object, status: int, words: str) -> None:
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("text/html")  # type: ignore[attr-defined]
    assert response.template.name == "error.html"  # type: ignore[attr-defined]
    assert words in response.context["message"]  # type: ignore[attr-defined]
    text = response.text  # type: ignore[attr-defined]
    assert '<header class="top">' in text and 'id="back"' in text  # the layout, and a way back


def test_unknown_review_is_an_error_page(client: TestClient, agent: tuple[str, str]) -> None:
    console_login(client, *agent)
    is_error_page(client.get("/console/reviews/rev-nope"), 404, "No review with id 'rev-nope'")


def test_bad_history_date_is_an_error_page_that_leads_back(client: TestClient, agent: tuple[str, str]) -> None:
    console_login(client, *agent)
    came_from = "http://testserver/console/history?q=x"
    response = client.get("/console/history?since=2026-13-45", headers={"referer": came_from})
    is_error_page(response, 400, "'2026-13-45' is not a valid since")
    assert response.context["back"] == came_from  # type: ignore[attr-defined]
    elsewhere = client.get("/console/history?since=nope", headers={"referer": "https://evil.example/"})
    assert elsewhere.context["back"] == "/console/"  # type: ignore[attr-defined]


def test_bad_query_parameter_and_unknown_path_are_error_pages(client: TestClient, agent: tuple[str, str]) -> None:
    console_login(client, *agent)
    is_error_page(client.get("/console/?sort=sideways"), 400, "sort")
    is_error_page(client.get("/console/no-such-page"), 404, "no such page")


def test_refused_decision_is_the_review_page_with_the_reason_and_the_draft(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent: tuple[str, str]
) -> None:
    hitl = factories.held(client, upstream, api_key)
    token = console_login(client, *agent)
    response = client.post(
        f"/console/reviews/{hitl['review_id']}/decide", data={"action": "approve", "text": "Paris.", "csrftoken": token}
    )
    assert response.status_code == 400 and response.template.name == "review.html"  # type: ignore[attr-defined]
    context = response.context  # type: ignore[attr-defined]
    assert "would throw away" in context["error"] and context["draft"] == "Paris."


def test_htmx_failure_is_a_toast(client: TestClient, agent: tuple[str, str]) -> None:
    token = console_login(client, *agent)
    response = client.post(
        "/console/reviews/rev-nope/diff", data={"text": "x"}, headers={"HX-Request": "true", "x-csrftoken": token}
    )
    assert response.status_code == 404
    assert response.template.name == "partials/_toast.html"  # type: ignore[attr-defined]
    assert response.headers["HX-Retarget"] == "#toast" and response.headers["HX-Reswap"] == "outerHTML"
    assert response.text.lstrip().startswith('<div id="toast"') and "No review with id" in response.text
    assert "<html" not in response.text


def test_history_restore_gets_the_whole_page(client: TestClient, agent: tuple[str, str]) -> None:
    console_login(client, *agent)
    fragment = client.get("/console/", headers={"HX-Request": "true"})
    assert "<html" not in fragment.text and 'id="queue-panel"' in fragment.text
    restored = client.get("/console/", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert "<html" in restored.text and 'id="queue-panel"' in restored.text
    assert "HX-History-Restore-Request" in restored.headers["vary"]


def test_api_errors_stay_json(client: TestClient, api_key: str) -> None:
    response = client.get("/v1/reviews/rev-nope", headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.get("/v1/no-such-path").json()["error"]["type"] == "invalid_request_error"
