"""Webhooks per API key: events written to the outbox in the transaction that makes them, delivered signed the
Standard Webhooks way, retried with backoff, failed ones retried from the console, one sender per database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import col, select
from standardwebhooks import Webhook
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app as cli
from gateway.models import Action, Agent, ApiKey, DeliveryStatus, Role, WebhookDelivery
from gateway.review.guard import ReviewAlreadyDecided
from gateway.runtime import Runtime
from gateway.settings import Settings, WebhookSettings
from gateway.webhooks import endpoints
from gateway.webhooks.sender import Sender, backoff
from tests import factories
from tests.factories import MODEL, console_login

HOOK = "http://receiver.test/hooks"
UNSURE = factories.completion_body("Lyon is the capital of France.", logprob=-1.5)


def set_webhook(url: str, database_url: str, key_name: str = "test") -> str:
    """Point the test key's webhooks at `url` through the CLI, as an operator would; returns the secret."""
    with factories.sync_session(database_url) as session:
        key = session.exec(select(ApiKey).where(col(ApiKey.name) == key_name)).one()
    done = CliRunner().invoke(cli, ["keys", "webhook", str(key.id), url])
    assert done.exit_code == 0, done.output
    return done.output.split("signing secret (shown once): ")[1].strip()


def outbox(database_url: str) -> list[WebhookDelivery]:
    with factories.sync_session(database_url) as session:
        return list(session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))).all())


@pytest.fixture
async def gateway(
    make_settings: Callable[..., Settings], upstream: factories.UpstreamMock, clock: factories.ManualClock
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its sender off (tests drive `deliver_due()` themselves)."""
    app = create_app(make_settings(), clock=clock)
    upstream.answer(UNSURE)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield app, client


async def hold(client: httpx.AsyncClient, key: str, wait: float = 0) -> dict[str, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "hitl": {"wait": wait}}
    response = await client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    return dict(response.json()["hitl"])


def sender_of(runtime: Runtime, **settings: Any) -> Sender:
    config = WebhookSettings(**{"backoff_base": 1.0, **settings})
    client = httpx.AsyncClient()  # respx intercepts it
    return Sender(runtime.sessions, client, config, runtime.clock)


async def test_events_are_written_with_what_they_report(
    gateway: tuple[FastAPI, httpx.AsyncClient], api_key: str, senior: tuple[str, str], database_url: str, env: str
) -> None:
    app, client = gateway
    runtime: Runtime = app.state.runtime
    await asyncio.to_thread(set_webhook, HOOK, database_url)
    review_id = (await hold(client, api_key))["review_id"]  # wait 0: the deadline passes at once
    await factories.decide_as(runtime, senior[0], review_id, Action.EDIT, text="Paris.")
    deadline, decided = outbox(database_url)
    assert deadline.event_type == "review.deadline_passed" and deadline.payload["data"]["outcome"] == "placeholder"
    assert decided.event_type == "review.decided" and decided.url == HOOK
    data = decided.payload["data"]
    assert (data["review_id"], data["status"], data["tier"]) == (review_id, "edited", "senior")
    assert data["completion"]["choices"][0]["message"]["content"] == "Paris."
    assert data["completion"]["hitl"]["status"] == "edited" and decided.event_id.startswith("msg_")
    assert decided.payload["type"] == "review.decided" and decided.payload["timestamp"].endswith("Z")


async def test_escalations_send_an_event_and_keys_without_an_endpoint_none(
    gateway: tuple[FastAPI, httpx.AsyncClient],
    upstream: factories.UpstreamMock,
    api_key: str,
    agent: tuple[str, str],
    database_url: str,
    env: str,
) -> None:
    app, client = gateway
    runtime: Runtime = app.state.runtime
    quiet = factories.make_api_key(database_url, "quiet")
    await hold(client, quiet, wait=0)  # a key with no endpoint: nothing in the outbox
    assert outbox(database_url) == []
    await asyncio.to_thread(set_webhook, HOOK, database_url)
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))  # the agent tier
    review_id = (await hold(client, api_key))["review_id"]
    async with runtime.sessions() as session:
        ada = (await session.exec(select(Agent).where(col(Agent.username) == "ada"))).one()
    await runtime.desk.escalate(review_id, ada, "needs a senior")
    escalated = outbox(database_url)[-1]
    assert escalated.event_type == "review.escalated"
    moved = {name: escalated.payload["data"][name] for name in ("from_tier", "to_tier", "tier", "review_id")}
    assert moved == {"from_tier": "agent", "to_tier": "senior", "tier": "senior", "review_id": review_id}


async def test_a_refused_decision_writes_no_event(
    gateway: tuple[FastAPI, httpx.AsyncClient],
    upstream: factories.UpstreamMock,
    api_key: str,
    agent: tuple[str, str],
    senior: tuple[str, str],
    database_url: str,
    env: str,
) -> None:
    app, client = gateway
    runtime: Runtime = app.state.runtime
    await asyncio.to_thread(set_webhook, HOOK, database_url)
    upstream.answer(factories.completion_body("Lyon.", logprob=-0.2))  # the agent tier: both may decide it
    review_id = (await hold(client, api_key, wait=0))["review_id"]
    results = await asyncio.gather(
        factories.decide_as(runtime, agent[0], review_id, Action.EDIT, text="Paris."),
        factories.decide_as(runtime, senior[0], review_id, Action.OVERRIDE, text="Call us."),
        return_exceptions=True,
    )
    assert sum(isinstance(result, ReviewAlreadyDecided) for result in results) == 1, results
    decided = [row for row in outbox(database_url) if row.event_type == "review.decided"]
    assert len(decided) == 1  # the loser's transaction, and its event, rolled back


async def test_delivery_is_signed_and_verifiable(
    gateway: tuple[FastAPI, httpx.AsyncClient],
    api_key: str,
    senior: tuple[str, str],
    database_url: str,
    env: str,
    upstream: factories.UpstreamMock,
) -> None:
    app, client = gateway
    runtime: Runtime = app.state.runtime
    secret = await asyncio.to_thread(set_webhook, HOOK, database_url)
    received: list[httpx.Request] = []
    upstream.router.post(HOOK).mock(side_effect=lambda request: received.append(request) or httpx.Response(204))
    review_id = (await hold(client, api_key, wait=0))["review_id"]
    await factories.decide_as(runtime, senior[0], review_id, Action.APPROVE)
    assert await sender_of(runtime).deliver_due() == 2
    assert [row.status for row in outbox(database_url)] == [DeliveryStatus.DELIVERED] * 2
    for request, row in zip(received, outbox(database_url), strict=True):
        payload = Webhook(secret).verify(request.content, dict(request.headers))  # raises when the signature is off
        assert payload == row.payload and request.headers["webhook-id"] == row.event_id
        assert request.headers["webhook-signature"].startswith("v1,")
    with pytest.raises(Exception, match="signature"):
        Webhook(endpoints.new_secret()).verify(received[0].content, dict(received[0].headers))


async def test_failures_back_off_then_fail_and_an_admin_retries_from_the_console(
    gateway: tuple[FastAPI, httpx.AsyncClient],
    api_key: str,
    senior: tuple[str, str],
    database_url: str,
    env: str,
    upstream: factories.UpstreamMock,
    clock: factories.ManualClock,
) -> None:
    app, client = gateway
    runtime: Runtime = app.state.runtime
    await asyncio.to_thread(set_webhook, HOOK, database_url)
    endpoint = upstream.router.post(HOOK).mock(return_value=httpx.Response(500))
    await hold(client, api_key, wait=0)  # one deadline event
    # Backoffs of a minute and two (with jitter, at least half of each): a slow machine's real seconds between
    # two calls cannot make an event due early.
    sender = sender_of(runtime, max_attempts=3, backoff_base=60.0)
    assert await sender.deliver_due() == 1
    (row,) = outbox(database_url)
    assert (row.status, row.attempts, row.last_status, row.last_error) == ("pending", 1, 500, "HTTP 500")
    assert await sender.deliver_due() == 0  # not due yet: backing off
    clock.advance(61)
    assert await sender.deliver_due() == 1
    clock.advance(121)
    endpoint.mock(side_effect=httpx.ConnectError("refused"))
    assert await sender.deliver_due() == 1
    (row,) = outbox(database_url)
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "ConnectError: no answer")

    factories.make_agent(database_url, "root", "admin password", Role.ADMIN)
    with TestClient(app) as console:
        agent_token = console_login(console, *senior)
        assert console.get("/console/webhooks").status_code == 403  # seniors do not see deliveries
        console.post("/console/logout", data={"csrftoken": agent_token})
        token = console_login(console, "root", "admin password")
        page = console.get("/console/webhooks")
        assert page.status_code == 200 and [d.event_id for d in page.context["failed"]] == [row.event_id]  # type: ignore[attr-defined]
        retried = console.post(f"/console/webhooks/{row.id}/retry", data={"csrftoken": token}, follow_redirects=False)
        assert retried.status_code == 303
        again = console.post(f"/console/webhooks/{row.id}/retry", data={"csrftoken": token})
        assert again.status_code == 409  # pending now: nothing to retry
    endpoint.mock(return_value=httpx.Response(200))
    assert await sender.deliver_due() == 1
    (row,) = outbox(database_url)
    assert (row.status, row.attempts) == ("delivered", 1)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for attempts, full in ((1, 2.0), (2, 4.0), (3, 8.0), (12, 60.0)):
        delays = [backoff(attempts, 2.0, 60.0) for _ in range(200)]
        assert all(full / 2 <= delay <= full for delay in delays)
        assert max(delays) - min(delays) > full / 10  # jittered, not all the same


async def test_one_sender_per_database(
    gateway: tuple[FastAPI, httpx.AsyncClient],
    api_key: str,
    database_url: str,
    env: str,
    upstream: factories.UpstreamMock,
    clock: factories.ManualClock,
) -> None:
    app, client = gateway
    runtime: Runtime = app.state.runtime
    await asyncio.to_thread(set_webhook, HOOK, database_url)
    upstream.router.post(HOOK).mock(return_value=httpx.Response(200))
    await hold(client, api_key, wait=0)
    first, second = sender_of(runtime, lease=10), sender_of(runtime, lease=10)
    assert await first.deliver_due() == 1
    await hold(client, api_key, wait=0)
    assert await second.deliver_due() == 0  # the first holds the lease
    clock.advance(11)  # the first stopped renewing (it died): the second takes over
    assert await second.deliver_due() == 1
    assert await first.deliver_due() == 0
    assert [row.status for row in outbox(database_url)] == ["delivered", "delivered"]


def test_keys_webhook_cli_checks_the_url_and_can_stop(api_key: str, database_url: str, env: str) -> None:
    with factories.sync_session(database_url) as session:
        key = session.exec(select(ApiKey)).one()
    bad = CliRunner().invoke(cli, ["keys", "webhook", str(key.id), "ftp://example.test/x"])
    assert bad.exit_code == 1 and "http(s) URL" in bad.output
    secret = set_webhook("https://hooks.example.test/hitl", database_url)
    assert secret.startswith("whsec_") and len(Webhook(secret)._whsecret) == 32
    listed = CliRunner().invoke(cli, ["keys", "list"])
    assert "webhook https://hooks.example.test/hitl" in listed.output
    stopped = CliRunner().invoke(cli, ["keys", "webhook", str(key.id), "--remove"])
    assert stopped.exit_code == 0
    with factories.sync_session(database_url) as session:
        key = session.exec(select(ApiKey)).one()
    assert (key.webhook_url, key.webhook_secret) == (None, None)


async def test_a_broken_secret_fails_the_delivery_not_the_sender(
    gateway: tuple[FastAPI, httpx.AsyncClient], api_key: str, database_url: str, env: str
) -> None:
    app, client = gateway
    runtime: Runtime = app.state.runtime
    await asyncio.to_thread(set_webhook, HOOK, database_url)
    with factories.sync_session(database_url) as session:
        key = session.exec(select(ApiKey)).one()
        key.webhook_secret = "whsec_!!! not base64"  # set by hand
        session.add(key)
        session.commit()
    await hold(client, api_key, wait=0)
    assert await sender_of(runtime, max_attempts=1).deliver_due() == 1
    (row,) = outbox(database_url)
    assert row.status == DeliveryStatus.FAILED and "not a valid whsec_ secret" in (row.last_error or "")


OTHER_HOOK = "http://other-receiver.test/hooks"


async def test_a_hanging_endpoint_delays_only_itself(
    gateway: tuple[FastAPI, httpx.AsyncClient],
    api_key: str,
    database_url: str,
    env: str,
    upstream: factories.UpstreamMock,
) -> None:
    """The first endpoint answers only once the second has had its event: served one after the other, the
    first would time out; served each on its own, both are delivered."""
    app, client = gateway
    other = factories.make_api_key(database_url, "other")
    await asyncio.to_thread(set_webhook, HOOK, database_url)
    await asyncio.to_thread(set_webhook, OTHER_HOOK, database_url, "other")
    heard = asyncio.Event()

    async def hanging(request: httpx.Request) -> httpx.Response:
        await asyncio.wait_for(heard.wait(), 5)
        return httpx.Response(204)

    def quick(request: httpx.Request) -> httpx.Response:
        heard.set()
        return httpx.Response(204)

    upstream.router.post(HOOK).mock(side_effect=hanging)
    upstream.router.post(OTHER_HOOK).mock(side_effect=quick)
    await hold(client, api_key)  # the hanging endpoint's event is the older one
    await hold(client, other)
    assert await sender_of(app.state.runtime, timeout=10).deliver_due() == 2
    assert [(row.url, row.status) for row in outbox(database_url)] == [(HOOK, "delivered"), (OTHER_HOOK, "delivered")]


async def test_an_endpoint_gets_a_review_s_events_in_order(
    gateway: tuple[FastAPI, httpx.AsyncClient],
    api_key: str,
    database_url: str,
    env: str,
    upstream: factories.UpstreamMock,
    senior: tuple[str, str],
    clock: factories.ManualClock,
) -> None:
    """The deadline's event fails once: the decision's, due at once, waits behind it."""
    app, client = gateway
    runtime: Runtime = app.state.runtime
    await asyncio.to_thread(set_webhook, HOOK, database_url)
    endpoint = upstream.router.post(HOOK).mock(
        side_effect=[httpx.Response(500), httpx.Response(204), httpx.Response(204)]
    )
    held = await hold(client, api_key)  # its deadline passes at once: review.deadline_passed
    await factories.decide_as(runtime, senior[0], held["review_id"], Action.APPROVE)  # review.decided
    sender = sender_of(runtime)
    assert await sender.deliver_due() == 1  # the first fails; the second does not overtake it
    assert [(row.event_type, row.status, row.attempts) for row in outbox(database_url)] == [
        ("review.deadline_passed", "pending", 1),
        ("review.decided", "pending", 0),
    ]
    clock.advance(1.1)
    assert await sender.deliver_due() == 2
    sent = [json.loads(call.request.content)["type"] for call in endpoint.calls]
    assert sent == ["review.deadline_passed", "review.deadline_passed", "review.decided"]
