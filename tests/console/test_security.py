"""The console's locks, each tried as an attacker would: a claim outside one's tiers, a CSRF check skipped by
a header or by sending no cookies, a login forged from another site, a session that outlives its logout,
cookies sent in clear over https, and a login throttle dodged with X-Forwarded-For."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from gateway.app import create_app
from gateway.errors import Forbidden
from gateway.models import Agent, Review
from gateway.review import agents
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests import factories
from tests.factories import console_login


def senior_review(client: TestClient, upstream: factories.UpstreamMock, key: str) -> str:
    """A review in the senior tier (confidence about 0.2), which an `agent` may not decide."""
    upstream.answer(factories.completion_body("Lyon.", logprob=-1.5))
    body = {"model": factories.MODEL, "messages": [{"role": "user", "content": "Capital?"}], "hitl": {"wait": 0}}
    hitl = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}).json()["hitl"]
    assert hitl["tier"] == "senior"
    return str(hitl["review_id"])


def test_an_agent_cannot_claim_a_review_of_a_tier_it_may_not_decide(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str], database_url: str
) -> None:
    review_id = senior_review(client, upstream, api_key)
    token = console_login(client, *agent)
    claimed = client.post(f"/console/reviews/{review_id}/claim", data={"csrftoken": token})
    assert claimed.status_code == 403 and "cannot claim reviews in the &#39;senior&#39; tier" in claimed.text
    client.get(f"/console/reviews/{review_id}")  # opening it claims nothing either
    with factories.sync_session(database_url) as session:
        review = session.get(Review, review_id)
    assert review is not None and review.claimed_by is None


async def test_the_desk_refuses_the_claim_too(
    app: FastAPI, aclient: httpx.AsyncClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str]
) -> None:
    unsure = factories.completion_body("Lyon.", logprob=-1.5)
    review_id = await factories.held_review(aclient, upstream, api_key, "Capital?", unsure)
    runtime: Runtime = app.state.runtime
    async with runtime.sessions() as session:
        ada = (await session.exec(select(Agent).where(Agent.username == agent[0]))).one()
    with pytest.raises(Forbidden):
        await runtime.desk.claim(review_id, ada)
    assert await runtime.desk.next(ada, "senior") is None


def test_a_console_post_is_csrf_checked_whatever_headers_it_carries(
    client: TestClient, upstream: factories.UpstreamMock, api_key: str, agent: tuple[str, str]
) -> None:
    factories.held(client, upstream, api_key)
    console_login(client, *agent)
    review_id = client.get("/console/").text.split('href="/console/reviews/')[1].split('"')[0]
    forged = {"action": "approve"}
    for headers in ({}, {"Authorization": "Bearer anything"}, {"Authorization": f"Bearer {api_key}"}):
        refused = client.post(f"/console/reviews/{review_id}/decide", data=forged, headers=headers)
        assert refused.status_code == 403, headers
    assert "pending" in client.get(f"/v1/reviews/{review_id}", headers={"Authorization": f"Bearer {api_key}"}).text


def test_a_login_posted_without_the_login_pages_cookie_is_refused(
    client: TestClient, database_url: str, agent: tuple[str, str]
) -> None:
    """A cross-site form carries no console cookie (SameSite=Lax): before, such a post signed the victim in as
    whoever the attacker chose. Now it is refused, and the console's own form still works."""
    forged = client.post("/console/login", data={"username": agent[0], "password": agent[1]}, follow_redirects=False)
    assert forged.status_code == 403 and "hitl_session" not in forged.headers.get("set-cookie", "")
    assert "security token is missing" in forged.text
    console_login(client, *agent)


def test_logging_out_ends_the_session_for_every_copy_of_its_cookie(
    client: TestClient, agent: tuple[str, str], database_url: str
) -> None:
    token = console_login(client, *agent)
    kept = dict(client.cookies)
    assert client.get("/console/", follow_redirects=False).status_code == 200
    client.post("/console/logout", data={"csrftoken": token}, follow_redirects=False)
    client.cookies.clear()
    for name, value in kept.items():
        client.cookies.set(name, value, path="/console")
    replayed = client.get("/console/", follow_redirects=False)
    assert replayed.status_code == 303 and "/console/login" in replayed.headers["location"]


@pytest.mark.parametrize("change", ["disable", "password"])
async def test_disabling_an_account_or_a_new_password_ends_its_sessions(
    app: FastAPI, aclient: httpx.AsyncClient, agent: tuple[str, str], change: str
) -> None:
    await factories.aconsole_login(aclient, *agent)
    assert (await aclient.get("/console/", follow_redirects=False)).status_code == 200
    runtime: Runtime = app.state.runtime
    async with runtime.sessions() as session:
        if change == "disable":
            await agents.set_active(session, agent[0], False)
            await agents.set_active(session, agent[0], True)  # enabled again: the old session stays ended
        else:
            await agents.set_password(session, agent[0], "a brand new password")
    ended = await aclient.get("/console/", follow_redirects=False)
    assert ended.status_code == 303 and "/console/login" in ended.headers["location"]


def cookie_flags(response: httpx.Response) -> dict[str, str]:
    """Each cookie the response sets, with its attributes as written."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        found[header.split("=", 1)[0]] = header
    return found


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_cookies_are_secure_when_the_console_is_served_over_https(
    make_settings: Callable[..., Settings], agent: tuple[str, str], scheme: str
) -> None:
    with TestClient(create_app(make_settings()), base_url=f"{scheme}://testserver") as client:
        page = client.get("/console/login")
        token = factories.csrf_token(page.text)
        signed_in = client.post(
            "/console/login",
            data={"username": agent[0], "password": agent[1], "csrftoken": token},
            follow_redirects=False,
        )
    cookies = {**cookie_flags(page), **cookie_flags(signed_in)}
    assert {"csrftoken", "hitl_session"} <= set(cookies)
    for header in cookies.values():
        attributes = {part.strip().lower() for part in header.split(";")[1:]}
        assert ("secure" in attributes) == (scheme == "https"), header


def _login_attempts(base: str, forwarded: list[str], extra: dict[str, str] | None = None) -> list[int]:
    """Failed logins, one per X-Forwarded-For value, each for another username; their status codes."""
    statuses = []
    with httpx.Client(base_url=base) as web:
        token = factories.csrf_token(web.get("/console/login").text)
        for number, address in enumerate(forwarded):
            headers = {"X-Forwarded-For": address, **(extra or {})}
            data = {"username": f"nobody-{number}", "password": "wrong", "csrftoken": token}
            statuses.append(web.post("/console/login", data=data, headers=headers).status_code)
    return statuses


@pytest.mark.slow
@pytest.mark.parametrize("trusted", [None, '["127.0.0.1"]'])
def test_x_forwarded_for_counts_only_from_a_configured_proxy(
    database_url: str, unsure_upstream: str, tmp_path: Path, trusted: str | None
) -> None:
    """A real `hitl serve`: with no trusted proxy, rotating X-Forwarded-For from loopback is one address (the
    socket's), locked out after 4 x 2 failures; with loopback configured as the proxy, each forwarded address
    counts apart, and a proxy that says https gets Secure cookies."""
    extra = {"HITL_LOGIN_MAX_FAILURES": "2"} | ({"HITL_TRUSTED_PROXIES": trusted} if trusted else {})
    env = factories.gateway_env(database_url, unsure_upstream, **extra)
    gateway = factories.GatewayProcess(env, factories.free_port(), tmp_path / "gateway.log")
    try:
        statuses = _login_attempts(gateway.base, [f"203.0.113.{n}" for n in range(10)])
        if trusted:
            assert statuses == [401] * 10
        else:
            assert statuses == [401] * 8 + [429] * 2
        page = httpx.get(f"{gateway.base}/console/login", headers={"X-Forwarded-Proto": "https"})
        secure = "secure" in page.headers["set-cookie"].lower()
        assert secure == bool(trusted)
    finally:
        gateway.stop()
