"""Memory beside the answer: what agents decided before on the same question, one key from the draft, and the
team's guidelines one key away, rendered safely."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from tests import factories
from tests.factories import MODEL, console_login


def ask(client: TestClient, upstream: factories.UpstreamMock, key: str, question: str, answer: str) -> str:
    upstream.answer(factories.completion_body(answer, logprob=-0.2))
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "hitl": {"wait": 0}}
    reply = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    return str(reply.json()["hitl"]["review_id"])


def decide(client: TestClient, token: str, review_id: str, action: str, text: str | None = None) -> None:
    data = {"action": action, "csrftoken": token, **({"text": text} if text is not None else {})}
    done = client.post(f"/console/reviews/{review_id}/decide", data=data, follow_redirects=False)
    assert done.status_code == 303, done.text


def test_the_review_page_lists_earlier_decisions_on_the_same_question(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str]
) -> None:
    first = ask(client, upstream, api_key, "How do I reset my password?", "Call us.")
    other = ask(client, upstream, api_key, "Where is my order?", "Lost.")
    second = ask(client, upstream, api_key, "how do I  reset my password?", "Email us.")  # same words
    current = ask(client, upstream, api_key, "How do I reset my password?", "No idea.")
    token = console_login(client, *agent)
    decide(client, token, first, "edit", "Use <b>Forgot password</b> on the sign-in page.")
    decide(client, token, other, "override", "It ships tomorrow.")
    decide(client, token, second, "approve")

    page = client.get(f"/console/reviews/{current}").text
    section = page.split('id="precedents"')[1].split("</section>")[0]
    assert section.index("approve by ada") < section.index("edit by ada")  # newest first
    assert "Email us." in section and "It ships tomorrow." not in section
    # Hostile or not, an earlier answer is text: escaped in the page and in the draft button.
    assert "Use &lt;b&gt;Forgot password&lt;/b&gt; on the sign-in page." in section and "<b>" not in section
    assert 'data-draft="Email us."' in section and "<kbd>p</kbd>" in section
    assert f'/console/reviews/{first}"' in section

    lonely = client.get(f"/console/reviews/{other}").text  # decided; nothing else was asked that way
    assert "No earlier decision on this question." in lonely


@pytest.fixture
def with_guidelines(make_settings: Any, tmp_path: Path) -> Any:
    path = tmp_path / "guidelines.md"
    path.write_text(
        "# Answering refunds\n\nNever promise a date. <script>alert(1)</script>\n\n"
        "- Be kind\n- [Policy](javascript:alert(2)) and [handbook](https://example.com/handbook)\n",
        encoding="utf-8",
    )
    with TestClient(create_app(make_settings(guidelines_path=path))) as client:
        yield client


def test_the_guidelines_render_safely_on_their_page_and_on_every_review(
    with_guidelines: TestClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str]
) -> None:
    client = with_guidelines
    review_id = ask(client, upstream, api_key, "Refund?", "Sure, tomorrow.")
    console_login(client, *agent)
    page = client.get("/console/guidelines").text
    assert "<h1>Answering refunds</h1>" in page and "<li>Be kind</li>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert 'href="javascript:' not in page and 'href="https://example.com/handbook"' in page  # left as text
    review = client.get(f"/console/reviews/{review_id}").text
    dialog = review.split('id="guidelines-dialog"')[1].split("</dialog>")[0]
    assert "<h1>Answering refunds</h1>" in dialog


def test_edited_guidelines_show_at_once(make_settings: Any, tmp_path: Path, agent: tuple[str, str]) -> None:
    """Rendered once per version of the file: an edit shows on the next page, without a restart."""
    path = tmp_path / "guidelines.md"
    path.write_text("# First version\n", encoding="utf-8")
    with TestClient(create_app(make_settings(guidelines_path=path))) as client:
        console_login(client, *agent)
        assert "<h1>First version</h1>" in client.get("/console/guidelines").text
        path.write_text("# Second version\n", encoding="utf-8")
        later = path.stat().st_mtime_ns + 1_000_000_000  # a second later, whatever the file system's resolution
        os.utime(path, ns=(later, later))
        page = client.get("/console/guidelines").text
    assert "<h1>Second version</h1>" in page and "First version" not in page


def test_without_guidelines_the_page_says_how_to_set_them(client: TestClient, agent: tuple[str, str]) -> None:
    console_login(client, *agent)
    assert "An admin sets <code>HITL_GUIDELINES_PATH</code>" in client.get("/console/guidelines").text
