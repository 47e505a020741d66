"""The sender is killed in the middle of a delivery; after a restart the event is sent again with the same
`webhook-id`, so a receiver that drops repeats (as the Standard Webhooks spec asks) handles every event exactly
once, and nothing is lost."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from sqlmodel import col, select
from standardwebhooks import Webhook

from gateway.models import ApiKey, DeliveryStatus, WebhookDelivery
from tests import factories
from tests.factories import MODEL

pytestmark = pytest.mark.slow


class Receiver:
    """A webhook endpoint that verifies each delivery, drops repeats by `webhook-id`, and stalls on the first
    delivery it ever gets (so the test can kill the sender mid-delivery)."""

    def __init__(self) -> None:
        self.webhook: Webhook | None = None  # set once the endpoint's secret is known
        self.received: list[str] = []  # every delivery's webhook-id, repeats included
        self.handled: list[str] = []  # each event once
        self.stalling = threading.Event()
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hooks")
        async def hook(request: Request) -> Response:
            body = await request.body()
            assert self.webhook is not None
            self.webhook.verify(body, dict(request.headers))
            event_id = request.headers["webhook-id"]
            with self.lock:
                first_ever = not self.received
                self.received.append(event_id)
                repeat = event_id in self.handled
                if not repeat:
                    self.handled.append(event_id)
            if first_ever:
                self.stalling.set()
                time.sleep(5)  # the sender is killed while it waits for this answer
            return Response(status_code=200)

        return app


def hitl(env: dict[str, str], *args: str) -> str:
    command = [str(Path(sys.executable).with_name("hitl")), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def receiver() -> Iterator[tuple[str, Receiver]]:
    endpoint = Receiver()
    with factories.serving(endpoint.app()) as base:
        yield f"{base}/hooks", endpoint


def test_a_killed_sender_delivers_again_and_each_event_is_handled_once(
    database_url: str, unsure_upstream: str, tmp_path: Path, receiver: tuple[str, Receiver]
) -> None:
    url, endpoint = receiver
    key = factories.make_api_key(database_url)
    env = factories.gateway_env(
        database_url,
        unsure_upstream,
        HITL_WEBHOOKS__LEASE="2",
        HITL_WEBHOOKS__POLL_INTERVAL="0.2",
        HITL_WEBHOOKS__TIMEOUT="30",
    )
    with factories.sync_session(database_url) as session:
        key_id = session.exec(select(ApiKey.id)).one()
    secret = hitl(env, "keys", "webhook", str(key_id), url).split("signing secret (shown once): ")[1].strip()
    endpoint.webhook = Webhook(secret)
    log = tmp_path / "gateway.log"

    def deadline_event(base: str, number: int) -> None:
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Question {number}?"}],
            "hitl": {"wait": 0},  # the deadline passes at once: a review.deadline_passed event
        }
        answer = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert answer.json()["hitl"]["status"] == "pending"

    first = factories.GatewayProcess(env, factories.free_port(), log)
    try:
        deadline_event(first.base, 1)
        assert endpoint.stalling.wait(15), "the first delivery never arrived"
        first.kill()  # mid-delivery: the endpoint has the event, the outbox does not know it
    finally:
        first.stop()
    with factories.sync_session(database_url) as session:
        (stalled,) = session.exec(select(WebhookDelivery)).all()
    assert stalled.status == DeliveryStatus.PENDING and stalled.attempts == 0

    second = factories.GatewayProcess(env, factories.free_port(), log)
    try:
        deadline_event(second.base, 2)

        def all_delivered() -> bool:
            with factories.sync_session(database_url) as session:
                rows = session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))).all()
            return len(rows) == 2 and all(row.status == DeliveryStatus.DELIVERED for row in rows)

        factories.until(all_delivered, 30, "both events delivered after the restart")
    finally:
        second.stop()
    with factories.sync_session(database_url) as session:
        ids = [row.event_id for row in session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))).all()]
    assert endpoint.received.count(ids[0]) == 2  # sent again after the kill, with the same webhook-id
    assert endpoint.received.count(ids[1]) == 1
    assert sorted(endpoint.handled) == sorted(ids) and len(endpoint.handled) == len(set(endpoint.handled))
