"""Working the queue over the console's real routes: claims, next, escalation, tags, canned answers, the
diff, history, the audit trail, live queue events, login throttling, session expiry, headers."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select
from typer.testing import CliRunner

from console import queue as console_queue
from gateway.app import create_app
from gateway.cli import app as cli
from gateway.models import Agent, ApiKey, Decision, Review
from gateway.prompt_templates import Prompts, canned_responses
from gateway.review.guard import ClaimedByOther
from gateway.runtime import Runtime
from tests import factories
from tests.factories import MODEL, TEMPLATES, console_login, csrf_token, held

AUTH = "Authorization"


def login_as(app: FastAPI, username: str, password: str) -> tuple[TestClient, str]:
    """A second browser: its own cookies, its own session."""
    client = TestClient(app)
    return client, console_login(client, username, password)


def review_of(url: str, review_id: str) -> Review:
    with factories.sync_session(url) as session:
        review = session.get(Review, review_id)
        assert review is not None
        return review


# --- claims -----------------------------------------------------------------------------------------


def test_opening_a_review_claims_it_and_a_second_agent_is_told(
    app: FastAPI, client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent, senior, database_url: str
) -> None:
    hitl = held(client, upstream, api_key)
    review_id = hitl["review_id"]
    ada_token = console_login(client, *agent)
    page = client.get(f"/console/reviews/{review_id}")
    assert "You hold this review" in page.text
    assert review_of(database_url, review_id).claimed_by is not None
    assert "ada" in client.get("/console/?tier=agent").text  # the queue shows who holds it

    with TestClient(app) as other:
        grace_token = console_login(other, *senior)
        seen = other.get(f"/console/reviews/{review_id}")
        assert "ada is working on this review" in seen.text
        refused = other.post(
            f"/console/reviews/{review_id}/decide", data={"action": "approve", "csrftoken": grace_token}
        )
        assert refused.status_code == 409 and "ada is working on this review" in refused.text

        # Ada leaves the page: the claim goes back at once, and Grace can take it.
        assert client.post(f"/console/reviews/{review_id}/release", data={"csrftoken": ada_token}).status_code == 204
        assert "You hold this review" in other.get(f"/console/reviews/{review_id}").text
        decided = other.post(
            f"/console/reviews/{review_id}/decide",
            data={"action": "approve", "csrftoken": grace_token},
            follow_redirects=False,
        )
        assert decided.status_code == 303


def test_an_unrenewed_claim_runs_out(
    make_settings, clock: factories.ManualClock, api_key: str, upstream: factories.UpstreamMock, agent, senior
) -> None:
    app = create_app(make_settings(claim_lease=30), clock=clock)
    with TestClient(app) as client, TestClient(app) as other:
        hitl = held(client, upstream, api_key)
        console_login(client, *agent)
        console_login(other, *senior)
        client.get(f"/console/reviews/{hitl['review_id']}")
        assert "ada is working" in other.get(f"/console/reviews/{hitl['review_id']}").text
        clock.advance(20)  # the clock runs on in real time too: margins a slow machine cannot eat
        assert "ada is working" in other.get(f"/console/reviews/{hitl['review_id']}").text
        clock.advance(15)
        assert "You hold this review" in other.get(f"/console/reviews/{hitl['review_id']}").text


def test_the_open_page_renews_its_claim(
    client: TestClient,
    clock: factories.ManualClock,
    api_key: str,
    upstream: factories.UpstreamMock,
    agent,
    database_url: str,
) -> None:
    hitl = held(client, upstream, api_key)
    token = console_login(client, *agent)
    page = client.get(f"/console/reviews/{hitl['review_id']}")
    assert 'hx-trigger="every 30s"' in page.text  # a third of the 90 s lease
    first = review_of(database_url, hitl["review_id"]).claim_expires_at
    clock.advance(10)
    renewed = client.post(
        f"/console/reviews/{hitl['review_id']}/claim", headers={"HX-Request": "true", "x-csrftoken": token}
    )
    assert renewed.status_code == 200 and renewed.text.lstrip().startswith('<div id="claim"')
    assert review_of(database_url, hitl["review_id"]).claim_expires_at >= first + timedelta(seconds=10)


async def test_two_concurrent_claims_one_wins(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, agent, senior
) -> None:
    runtime: Runtime = app.state.runtime
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Q?"}], "hitl": {"wait": 0}}
    review_id = (await aclient.post("/v1/chat/completions", json=body, headers={AUTH: f"Bearer {api_key}"})).json()[
        "hitl"
    ]["review_id"]
    async with runtime.sessions() as session:
        people = (await session.exec(select(Agent).order_by(Agent.username))).all()
    results = await asyncio.gather(
        *(runtime.desk.claim(review_id, person) for person in people), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, Review)]
    losers = [r for r in results if isinstance(r, ClaimedByOther)]
    assert len(winners) == 1 and len(losers) == 1


def test_next_takes_the_oldest_review_nobody_else_holds(
    app: FastAPI, client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent, senior
) -> None:
    first = held(client, upstream, api_key)["review_id"]
    second = held(client, upstream, api_key, text="Marseille.")["review_id"]
    token = console_login(client, *agent)
    taken = client.post("/console/next", data={"tier": "agent", "csrftoken": token}, follow_redirects=False)
    assert taken.headers["location"] == f"/console/reviews/{first}"
    with TestClient(app) as other:
        grace_token = console_login(other, *senior)
        taken = other.post("/console/next", data={"tier": "agent", "csrftoken": grace_token}, follow_redirects=False)
        assert taken.headers["location"] == f"/console/reviews/{second}"
        # Ada's claim keeps hers away from Grace; Grace's own claim does not hide it from her, unless she skips it.
        again = other.post("/console/next", data={"tier": "agent", "csrftoken": grace_token}, follow_redirects=False)
        assert again.headers["location"] == f"/console/reviews/{second}"
        skip = {"tier": "agent", "skip": second, "csrftoken": grace_token}
        empty = other.post("/console/next", data=skip, follow_redirects=False)
        assert empty.headers["location"] == "/console/?tier=agent&empty=1"


# --- decisions --------------------------------------------------------------------------------------


def test_escalate_moves_the_review_up_with_its_reason(
    app: FastAPI, client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent, senior, database_url: str
) -> None:
    review_id = held(client, upstream, api_key)["review_id"]
    token = console_login(client, *agent)
    client.get(f"/console/reviews/{review_id}")
    path = f"/console/reviews/{review_id}/decide"
    no_reason = client.post(path, data={"action": "escalate", "csrftoken": token})
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.text
    moved = client.post(
        path,
        data={"action": "escalate", "comment": "Refund policy question", "tags": ["policy"], "csrftoken": token},
        follow_redirects=False,
    )
    assert moved.status_code == 303
    review = review_of(database_url, review_id)
    assert (review.tier, review.status, review.claimed_by) == ("senior", "open", None)
    assert 'id="decide-form"' not in client.get(f"/console/reviews/{review_id}").text  # an agent cannot go on

    with TestClient(app) as other:
        grace_token = console_login(other, *senior)
        page = other.get(f"/console/reviews/{review_id}")
        assert "Refund policy question" in page.text and "from agent to senior" in page.text
        top = other.post(path, data={"action": "escalate", "comment": "?", "csrftoken": grace_token})
        assert top.status_code == 400 and "highest tier" in top.text
        done = other.post(path, data={"action": "approve", "csrftoken": grace_token}, follow_redirects=False)
        assert done.headers["location"] == f"/console/?tier=senior&decided={review_id}&empty=1"  # nothing next
    with factories.sync_session(database_url) as session:
        actions = [(d.action, d.from_tier, d.to_tier, d.tags) for d in session.exec(select(Decision)).all()]
    assert actions == [("escalate", "agent", "senior", ["policy"]), ("approve", "senior", None, [])]


def test_override_with_a_canned_response_and_tags(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent, database_url: str
) -> None:
    review_id = held(client, upstream, api_key)["review_id"]
    token = console_login(client, *agent)
    page = client.get(f"/console/reviews/{review_id}")
    version, responses = canned_responses()
    assert version == "canned-v1" and all(item.title in page.text for item in responses)
    path = f"/console/reviews/{review_id}/decide"
    unknown = client.post(path, data={"action": "override", "text": "x", "tags": ["nonsense"], "csrftoken": token})
    assert unknown.status_code == 400 and "Unknown reason tags" in unknown.text
    done = client.post(
        path,
        data={"action": "override", "canned": "1", "tags": ["wrong-facts", "tone"], "comment": "c", "csrftoken": token},
        follow_redirects=False,
    )
    assert done.status_code == 303
    poll = client.get(f"/v1/reviews/{review_id}", headers={AUTH: f"Bearer {api_key}"}).json()
    assert poll["completion"]["choices"][0]["message"]["content"] == responses[1].text
    with factories.sync_session(database_url) as session:
        decision = session.exec(select(Decision)).one()
    assert decision.tags == ["wrong-facts", "tone"] and decision.comment == "c"


def test_diff_preview_marks_what_the_edit_changes(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    review_id = held(client, upstream, api_key, text="The capital is Lyon.")["review_id"]
    token = console_login(client, *agent)
    fragment = client.post(
        f"/console/reviews/{review_id}/diff",
        data={"text": "The capital is <b>Paris</b>."},
        headers={"HX-Request": "true", "x-csrftoken": token},
    )
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith('<div id="diff"')
    assert "<del>Lyon.</del>" in fragment.text and "<ins>&lt;b&gt;Paris&lt;/b&gt;.</ins>" in fragment.text
    assert "<html" not in fragment.text


def test_review_page_shows_heat_map_wait_and_audit_trail(
    make_settings, api_key: str, upstream: factories.UpstreamMock, agent, database_url: str
) -> None:
    body = factories.completion_body("Lyon", logprob=-0.2)
    body["choices"][0]["logprobs"]["content"][0]["top_logprobs"].append({"token": "Paris", "logprob": -1.9})
    upstream.answer(body)
    with TestClient(create_app(make_settings())) as client:
        request = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "hitl": {"wait": 0}}
        review_id = client.post("/v1/chat/completions", json=request, headers={AUTH: f"Bearer {api_key}"}).json()[
            "hitl"
        ]["review_id"]
        token = console_login(client, *agent)
        page = client.get(f"/console/reviews/{review_id}").text
        assert re.search(r'<span class="tok ok" title="p = 82%; alternatives: [^"]*&#39;Paris&#39; 15%', page)
        assert "client no longer waiting" in page  # wait 0: it has the placeholder already
        placeholder = Prompts().get("placeholder").text.strip()
        told = page.split('id="told"')[1].split("</p>")[0]
        assert f"The customer was told</strong> the placeholder: “{html.escape(placeholder)}”" in told
        assert "The app has no webhook: your decision reaches the customer when the app polls for it." in told
        row = client.get("/console/?tier=agent").text.split(f'id="review-{review_id}"')[1].split("</tr>")[0]
        assert "has the placeholder" in row and ">polls<" in row
        with factories.sync_session(database_url) as session:
            key = session.exec(select(ApiKey)).one()
            key.webhook_url = "https://hooks.example.com/hitl"
            session.add(key)
            session.commit()
        told = client.get(f"/console/reviews/{review_id}").text.split('id="told"')[1].split("</p>")[0]
        assert "Your decision reaches the app at once, by its webhook." in told
        row = client.get("/console/?tier=agent").text.split(f'id="review-{review_id}"')[1].split("</tr>")[0]
        assert ">webhook<" in row
        client.post(
            f"/console/reviews/{review_id}/decide", data={"action": "edit", "text": "Paris", "csrftoken": token}
        )
        trail = client.get(f"/console/reviews/{review_id}").text.split('id="trail"')[1]
    steps = ("held</strong>", "received the placeholder", "claimed</strong> by ada", "decided</strong> by ada")
    for step in (*steps, "-Lyon", "+Paris"):
        assert step in trail, step


def test_history_searches_decisions(client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent) -> None:
    first = held(client, upstream, api_key)["review_id"]
    second = held(client, upstream, api_key, text="Nice.")["review_id"]
    token = console_login(client, *agent)
    client.post(f"/console/reviews/{first}/decide", data={"action": "edit", "text": "Paris.", "csrftoken": token})
    client.post(f"/console/reviews/{second}/decide", data={"action": "approve", "csrftoken": token})
    everything = client.get("/console/history").text
    assert first in everything and second in everything
    by_text = client.get("/console/history?q=paris").text
    assert first in by_text and second not in by_text
    approvals = client.get("/console/history?action=approve&by=ada&tier=agent", headers={"HX-Request": "true"})
    assert second in approvals.text and first not in approvals.text and "<html" not in approvals.text
    assert approvals.text.lstrip().startswith('<table class="history" id="history-rows">')
    assert first not in client.get("/console/history?since=2001-01-01&until=2001-01-02").text
    # The search form sends empty fields as "": no filter, not an error.
    blank = client.get("/console/history?q=&by=&action=&tier=&since=&until=")
    assert blank.status_code == 200 and first in blank.text and second in blank.text
    assert client.get("/console/history?since=yesterday").status_code == 400


def test_queue_sorts_and_filters(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent, database_url: str
) -> None:
    sure = held(client, upstream, api_key, text="Lyon.")["review_id"]  # logprob -0.2: more confident
    upstream.answer(factories.completion_body("Nice.", logprob=-0.22))
    other_key = factories.make_api_key(database_url, "second")
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Q?"}], "hitl": {"wait": 0}}
    unsure = client.post("/v1/chat/completions", json=request, headers={AUTH: f"Bearer {other_key}"}).json()["hitl"][
        "review_id"
    ]
    console_login(client, *agent)
    oldest_first = client.get("/console/?tier=agent").text
    assert oldest_first.index(sure) < oldest_first.index(unsure)
    least_sure = client.get("/console/?tier=agent&sort=confidence").text
    assert least_sure.index(unsure) < least_sure.index(sure)
    assert 'data-tier="agent">agent <span class="count">2</span>' in oldest_first
    with factories.sync_session(database_url) as session:
        key_id = session.get(Review, unsure).api_key_id  # type: ignore[union-attr]
    only_second = client.get(f"/console/?tier=agent&key={key_id}").text
    assert unsure in only_second and sure not in only_second
    assert "Nothing waiting" in client.get("/console/?tier=agent&model=other-model").text
    # The filter form as a browser submits it, with "All models" and "All keys" chosen.
    everything = client.get("/console/?tier=agent&sort=age&model=&key=")
    assert everything.status_code == 200 and sure in everything.text and unsure in everything.text


async def test_queue_events_follow_new_reviews(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock
) -> None:
    runtime: Runtime = app.state.runtime
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))

    async def never() -> bool:
        return False

    changes = console_queue.queue_changes(runtime.desk, runtime.settings.hold.poll_interval, never)
    first = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.05)  # the feed has read the current version
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Q?"}], "hitl": {"wait": 0}}
    await aclient.post("/v1/chat/completions", json=body, headers={AUTH: f"Bearer {api_key}"})
    event = await asyncio.wait_for(first, timeout=5)
    assert event.event == "queue"
    await changes.aclose()


async def test_a_change_between_the_page_and_its_event_stream_is_not_missed(
    app: FastAPI, aclient: httpx.AsyncClient, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    """The page says which queue version it shows; its stream starts there, so a review that arrived after the
    page was rendered but before the stream connected still refreshes it."""
    runtime: Runtime = app.state.runtime
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))
    await factories.aconsole_login(aclient, *agent)
    page = (await aclient.get("/console/")).text
    rendered = int(re.search(r'sse-connect="/console/events\?since=(\d+)"', page)[1])  # type: ignore[index]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Q?"}], "hitl": {"wait": 0}}
    await aclient.post("/v1/chat/completions", json=body, headers={AUTH: f"Bearer {api_key}"})

    async def never() -> bool:
        return False

    changes = console_queue.queue_changes(runtime.desk, runtime.settings.hold.poll_interval, never, rendered)
    event = await asyncio.wait_for(anext(changes), timeout=5)
    assert event.event == "queue" and int(str(event.data)) > rendered
    await changes.aclose()


# --- accounts and safety ----------------------------------------------------------------------------


def test_login_is_throttled_after_repeated_failures(client: TestClient, agent) -> None:
    token = csrf_token(client.get("/console/login").text)
    for _ in range(5):
        wrong = client.post("/console/login", data={"username": "ada", "password": "nope", "csrftoken": token})
        assert wrong.status_code == 401
    locked = client.post(
        "/console/login", data={"username": "ada", "password": agent[1], "csrftoken": token}, follow_redirects=False
    )
    assert locked.status_code == 429 and "Too many failed logins" in locked.text
    assert locked.headers["retry-after"] == "900"


def test_sessions_expire_however_active(make_settings, clock: factories.ManualClock, agent) -> None:
    with TestClient(create_app(make_settings(session_max_age=3600), clock=clock)) as client:
        console_login(client, *agent)
        clock.advance(3500)  # the clock runs on in real time too: a margin a slow machine cannot eat
        assert client.get("/console/", follow_redirects=False).status_code == 200
        clock.advance(200)
        assert client.get("/console/", follow_redirects=False).status_code == 303


def test_disabled_account_is_signed_out(
    client: TestClient, agent, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    console_login(client, *agent)
    monkeypatch.setenv("HITL_DATABASE_URL", database_url)
    result = CliRunner().invoke(cli, ["users", "disable", "ada"])
    assert result.exit_code == 0, result.output
    assert client.get("/console/", follow_redirects=False).status_code == 303
    assert "ada\tagent\tdisabled" in CliRunner().invoke(cli, ["users", "list"]).output


def test_console_sends_a_strict_content_security_policy(client: TestClient, agent) -> None:
    console_login(client, *agent)
    headers = client.get("/console/").headers
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in client.get("/v1/models").headers  # the API is not a page


def test_templates_have_no_inline_script_or_style() -> None:
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert "style=" not in text and "<style" not in text, template.name


def test_every_partial_route_renders_its_fragment(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    review_id = held(client, upstream, api_key)["review_id"]
    token = console_login(client, *agent)
    client.get(f"/console/reviews/{review_id}")
    hx = {"HX-Request": "true", "x-csrftoken": token}
    fragments = {
        "queue-panel": client.get("/console/?tier=agent", headers=hx),
        "history-rows": client.get("/console/history", headers=hx),
        "claim": client.post(f"/console/reviews/{review_id}/claim", headers=hx),
        "diff": client.post(f"/console/reviews/{review_id}/diff", data={"text": "x"}, headers=hx),
    }
    for root, response in fragments.items():
        assert response.status_code == 200, root
        assert f'id="{root}"' in response.text.split(">")[0], root
        assert "<html" not in response.text and "{#" not in response.text, root


def test_partials_are_included_by_their_pages() -> None:
    pages = "".join(page.read_text() for page in TEMPLATES.glob("*.html"))
    partials = "".join(p.read_text() for p in (TEMPLATES / "partials").glob("*.html"))
    for partial in (TEMPLATES / "partials").glob("_*.html"):
        assert f'"partials/{partial.name}"' in pages + partials, partial.name


def test_multipart_posts_are_refused_not_crashed(client: TestClient, agent) -> None:
    token = console_login(client, *agent)
    response = client.post("/console/logout", files={"csrftoken": (None, token)})
    assert response.status_code == 415 and "content-security-policy" in response.headers
    assert client.get("/console/", follow_redirects=False).status_code == 200  # still logged in


def test_review_page_shows_every_kind_of_message(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    messages = [
        {"role": "system", "content": "You are the billing bot."},
        {"role": "user", "content": [{"type": "text", "text": "Refund order 42?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
    ]
    upstream.answer(factories.completion_body("It shipped.", logprob=-0.2))
    body = {"model": MODEL, "messages": messages, "hitl": {"wait": 0}}
    review_id = client.post("/v1/chat/completions", json=body, headers={AUTH: f"Bearer {api_key}"}).json()["hitl"][
        "review_id"
    ]
    console_login(client, *agent)
    conversation = client.get(f"/console/reviews/{review_id}").text.split('id="conversation"')[1].split("</section>")[0]
    for needle in (
        "role-system",
        "You are the billing bot.",
        "role-user",
        "Refund order 42?",
        "role-assistant",
        "lookup",
        "role-tool",
        "result of call_1",
        "shipped",
    ):
        assert needle in conversation, needle


def test_waiting_clients_come_first_nearest_deadline_first_then_the_oldest(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent, database_url: str
) -> None:
    """ "Take next" and the queue's default order: a client still on the line before one that polls."""
    polls = held(client, upstream, api_key)["review_id"]  # the oldest; its client polls (no deadline ahead)
    far = held(client, upstream, api_key, text="Marseille.")["review_id"]
    near = held(client, upstream, api_key, text="Nice.")["review_id"]
    also_polls = held(client, upstream, api_key, text="Lille.")["review_id"]
    soon = datetime.now(UTC) + timedelta(seconds=30)
    with factories.sync_session(database_url) as session:
        for review_id, deadline in ((far, soon + timedelta(seconds=60)), (near, soon)):
            review = session.get(Review, review_id)
            assert review is not None
            review.deadline_at = deadline
            session.add(review)
        session.commit()
    token = console_login(client, *agent)
    page = client.get("/console/?tier=agent").text
    assert [page.index(f'id="review-{r}"') for r in (near, far, polls, also_polls)] == sorted(
        page.index(f'id="review-{r}"') for r in (near, far, polls, also_polls)
    )
    assert 'value="urgency" selected' in page
    order = []
    for _ in range(4):
        taken = client.post("/console/next", data={"tier": "agent", "csrftoken": token}, follow_redirects=False)
        review_id = taken.headers["location"].rsplit("/", 1)[1]
        order.append(review_id)
        client.post(f"/console/reviews/{review_id}/decide", data={"action": "approve", "csrftoken": token})
    assert order == [near, far, polls, also_polls]


def test_an_agents_own_stale_claim_never_blocks_take_next_and_skip_moves_on(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    first = held(client, upstream, api_key)["review_id"]
    second = held(client, upstream, api_key, text="Marseille.")["review_id"]
    token = console_login(client, *agent)
    client.get(f"/console/reviews/{first}")  # claimed, then the tab was closed without giving it back
    taken = client.post("/console/next", data={"tier": "agent", "csrftoken": token}, follow_redirects=False)
    assert taken.headers["location"] == f"/console/reviews/{first}"
    page = client.get(taken.headers["location"]).text
    assert f'name="skip" value="{first}"' in page
    skipped = client.post(
        "/console/next", data={"tier": "agent", "skip": first, "csrftoken": token}, follow_redirects=False
    )
    assert skipped.headers["location"] == f"/console/reviews/{second}"


def test_history_shows_the_question_and_only_what_was_sent(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent, senior
) -> None:
    """An escalation sent nothing: its row says so, never the candidate as if it had gone out."""
    escalated = held(client, upstream, api_key, text="Maybe Lyon.")["review_id"]
    edited = held(client, upstream, api_key, text="Nice.")["review_id"]
    token = console_login(client, *agent)
    data = {"action": "escalate", "comment": "not sure about the city", "csrftoken": token}
    client.post(f"/console/reviews/{escalated}/decide", data=data)
    client.post(f"/console/reviews/{edited}/decide", data={"action": "edit", "text": "Paris.", "csrftoken": token})
    rows = client.get("/console/history", headers={"HX-Request": "true"}).text
    assert "<th>Question</th>" in rows and rows.count("Capital of France?") == 2
    escalation = rows.split(f"/console/reviews/{escalated}")[1].split("</tr>")[0]
    assert "nothing: escalated (“not sure about the city”)" in escalation and "Maybe Lyon." not in escalation
    assert "Paris." in rows.split(f"/console/reviews/{edited}")[1].split("</tr>")[0]
    # The text search reads the question too, in any script.
    assert edited in client.get("/console/history?q=capital+of+france").text
    question = [{"role": "user", "content": "パスワードをリセットするには?"}]
    japanese = held(client, upstream, api_key, text="設定ページへ。", messages=question)["review_id"]
    client.post(f"/console/reviews/{japanese}/decide", data={"action": "approve", "csrftoken": token})
    found = client.get("/console/history", params={"q": "リセット"}).text
    assert japanese in found and edited not in found


def test_the_queue_leaves_out_empty_columns_and_shows_the_whole_question(
    client: TestClient, api_key: str, upstream: factories.UpstreamMock, agent, senior, database_url: str
) -> None:
    question = "My parcel 4471 arrived damaged and the box was open, what can I do about it?"
    first = held(client, upstream, api_key, messages=[{"role": "user", "content": question}])["review_id"]
    console_login(client, *agent)
    page = client.get("/console/?tier=agent").text
    assert "Claimed by" not in page and '<th class="tags">' not in page and "Assigned</th>" not in page
    row = page.split(f'id="review-{first}"')[1].split("</tr>")[0]
    assert f'<div class="preview" title="{question}">{question}</div>' in row
    factories.claimed_by(database_url, first, senior[0])  # now someone holds it: the column appears
    page = client.get("/console/?tier=agent").text
    assert '<th class="claimed">Claimed by</th>' in page and senior[0] in page.split(f'id="review-{first}"')[1]
