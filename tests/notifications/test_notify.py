"""`hitl notify`: a review past its tier's SLA and the tier's daily digest reach a Slack-compatible webhook (a
local receiver) and an inbox (a local SMTP server, aiosmtpd), each once, with a link and never the
conversation's text; a failed send is retried after its backoff and given up after `max_attempts`."""

from __future__ import annotations

import email.policy
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlmodel import select
from typer.testing import CliRunner

from gateway import db, policy
from gateway.app import create_app
from gateway.cli import app as cli
from gateway.clock import SystemClock
from gateway.models import (
    DeliveryStatus,
    Exchange,
    ExchangeStatus,
    Notification,
    Review,
    ReviewStatus,
    Route,
)
from gateway.notifications import watch
from gateway.settings import NotifySettings, Settings
from tests import factories

runner = CliRunner()
SECRET = "my card number is 4242"  # the customer's words: never in a message


class Inbox:
    """aiosmtpd's handler: every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append(message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = factories.free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def receiver() -> Iterator[tuple[list[dict[str, Any]], str]]:
    """A Slack-compatible incoming webhook that refuses its first message (HTTP 500), then takes them all."""
    received: list[dict[str, Any]] = []
    calls = {"n": 0}
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> JSONResponse:
        calls["n"] += 1
        if calls["n"] == 1:
            return JSONResponse({"ok": False}, status_code=500)
        received.append(await request.json())
        return JSONResponse({"ok": True})

    @app.post("/broken")
    async def broken() -> JSONResponse:
        return JSONResponse({"ok": False}, status_code=503)

    with factories.serving(app) as url:
        yield received, url


def write_policy(tmp_path: Path, hook: str) -> Path:
    text = policy.DEFAULT_POLICY.read_text() + (f"notify:\n  agent: {{webhook: '{hook}', email: [lead@example.com]}}\n")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    policy.load(path)  # it is a valid policy
    return path


def seed_reviews(database_url: str) -> dict[str, str]:
    """Open held reviews: one in `agent` 5 min old (past its 120 s SLA), one 10 s old, one in `senior` an hour old."""
    now = datetime.now(UTC)
    made: dict[str, str] = {}
    with factories.sync_session(database_url) as session:
        key = factories.key_named(session, "web")
        rows: list[Any] = []
        for name, tier, age in (("late", "agent", 300), ("fresh", "agent", 10), ("senior", "senior", 3600)):
            at = now - timedelta(seconds=age)
            exchange = Exchange(request_id="r", api_key_id=key, model="m", upstream_model="m",
                                request={"messages": [{"role": "user", "content": SECRET}]}, response={},
                                signals={}, policy_version="p", route=Route.HOLD, tier=tier, status=ExchangeStatus.HELD,
                                candidate_text=SECRET, created_at=at)  # fmt: skip
            review = Review(exchange_id=exchange.id, api_key_id=key, tier=tier, created_at=at, deadline_at=at,
                            status=ReviewStatus.OPEN)  # fmt: skip
            rows += [exchange, review]
            made[name] = review.id
        factories.add_in_order(session, rows)
    return made


def notify_env(monkeypatch: pytest.MonkeyPatch, path: Path, smtp_port: int, **extra: str) -> None:
    monkeypatch.setenv("HITL_POLICY_PATH", str(path))
    monkeypatch.setenv("HITL_NOTIFY__SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("HITL_NOTIFY__SMTP_PORT", str(smtp_port))
    monkeypatch.setenv("HITL_NOTIFY__CONSOLE_URL", "https://hitl.example.com")
    monkeypatch.setenv("HITL_NOTIFY__DIGEST_HOUR", "0")  # the digest is due at any hour
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def test_a_late_review_and_the_digest_reach_the_webhook_and_the_inbox_once(
    env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inbox: tuple[Inbox, int],
    receiver: tuple[list[dict[str, Any]], str],
) -> None:
    mail, port = inbox
    posted, url = receiver
    notify_env(monkeypatch, write_policy(tmp_path, f"{url}/hook"), port)
    reviews = seed_reviews(env)

    first = runner.invoke(cli, ["notify"])
    assert first.exit_code == 0, first.output
    assert "4 new notifications; sent 3, retrying 1, failed 0" in first.output  # the hook refused its first
    again = runner.invoke(cli, ["notify"])
    assert "0 new notifications; sent 0, retrying 0, failed 0" in again.output  # made once; the retry waits
    with factories.sync_session(env) as session:
        waiting = session.exec(select(Notification).where(Notification.status == DeliveryStatus.PENDING)).one()
        assert waiting.attempts == 1 and waiting.last_error == "NotSent: HTTP 500"
        waiting.next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)  # its backoff has passed
        session.add(waiting)
        session.commit()
    assert "sent 1, retrying 0" in runner.invoke(cli, ["notify"]).output

    texts = [message["text"] for message in posted]
    late = f"https://hitl.example.com/console/reviews/{reviews['late']}"
    assert len(texts) == 2 and any(late in text for text in texts)
    assert any("[hitl] agent on" in text and "2 waiting" in text and "/console/?tier=agent" in text for text in texts)
    subjects = sorted(str(message["Subject"]) for message in mail.messages)
    assert len(subjects) == 2 and all(message["To"] == "lead@example.com" for message in mail.messages)
    assert subjects[1] == f"[hitl] review {reviews['late']} in agent has waited 5 min (SLA 2 min)"
    assert subjects[0].startswith("[hitl] agent on ") and "2 waiting, 0 decided in the last 24 h" in subjects[0]
    everything = " ".join(texts) + " ".join(str(message) for message in mail.messages)
    assert SECRET not in everything and reviews["fresh"] not in everything and reviews["senior"] not in everything


def test_a_channel_that_keeps_failing_is_given_up_with_its_error(
    env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inbox: tuple[Inbox, int],
    receiver: tuple[list[dict[str, Any]], str],
) -> None:
    _, port = inbox
    _, url = receiver
    path = tmp_path / "policy.yaml"
    path.write_text(
        policy.DEFAULT_POLICY.read_text() + f"notify:\n  agent: {{webhook: '{url}/broken', digest: false}}\n"
    )
    notify_env(monkeypatch, path, port, HITL_NOTIFY__MAX_ATTEMPTS="1")
    seed_reviews(env)
    result = runner.invoke(cli, ["notify"])
    assert "1 new notifications; sent 0, retrying 0, failed 1" in result.output, result.output
    with factories.sync_session(env) as session:
        failed = session.exec(select(Notification)).one()
    assert failed.status == DeliveryStatus.FAILED and failed.last_error == "NotSent: HTTP 503"


@pytest.mark.parametrize(
    ("notify", "words"),
    [("{lawyers: {webhook: 'https://x'}}", "not in tiers"), ("{agent: {}}", "needs a `webhook` or an `email`"),
     ("{agent: {webhook: 'ftp://x'}}", "http:// or https://"), ("{agent: {email: ['not an address']}}",
                                                                  "not an e-mail address")],
)  # fmt: skip
def test_a_bad_notify_setting_names_its_line(notify: str, words: str) -> None:
    with pytest.raises(policy.PolicyError, match=words):
        policy.parse(policy.DEFAULT_POLICY.read_text() + f"notify: {notify}\n", "team.yaml")


def seed_deadlines(database_url: str) -> dict[str, str]:
    """Open held reviews whose clients' waits end: in 10 s and in 60 s (`agent`), 5 s ago (`agent`), in 5 s
    (`senior`, which asks for no warning)."""
    now = datetime.now(UTC)
    made: dict[str, str] = {}
    with factories.sync_session(database_url) as session:
        key = factories.key_named(session, "web")
        rows: list[Any] = []
        for name, tier, left in (("soon", "agent", 10), ("later", "agent", 60), ("gone", "agent", -5),
                                 ("senior", "senior", 5)):  # fmt: skip
            exchange = Exchange(request_id="r", api_key_id=key, model="m", upstream_model="m",
                                request={"messages": [{"role": "user", "content": SECRET}]}, response={},
                                signals={}, policy_version="p", route=Route.HOLD, tier=tier, status=ExchangeStatus.HELD,
                                candidate_text=SECRET, created_at=now - timedelta(seconds=20))  # fmt: skip
            rows += [exchange, Review(exchange_id=exchange.id, api_key_id=key, tier=tier, created_at=now,
                                      deadline_at=now + timedelta(seconds=left))]  # fmt: skip
            made[name] = rows[-1].id
        factories.add_in_order(session, rows)
    return made


def deadline_policy(tmp_path: Path, hook: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy.DEFAULT_POLICY.read_text() + "notify:\n  agent: {webhook: '" + hook
                    + "', email: [lead@example.com], deadline: 15, sla: false, digest: false}\n")  # fmt: skip
    return path


async def test_a_deadline_seconds_away_is_warned_of_once_at_once(
    database_url: str,
    tmp_path: Path,
    inbox: tuple[Inbox, int],
    receiver: tuple[list[dict[str, Any]], str],
) -> None:
    mail, port = inbox
    posted, url = receiver
    rules = policy.load(deadline_policy(tmp_path, f"{url}/hook"))
    reviews = seed_deadlines(database_url)
    settings = NotifySettings(smtp_host="127.0.0.1", smtp_port=port, console_url="https://hitl.example.com")
    engine = db.create_engine(database_url)
    sessions = db.session_factory(engine)
    try:
        async with httpx.AsyncClient() as client:
            first = await watch.turn(sessions, rules, settings, client, SystemClock())
            again = await watch.turn(sessions, rules, settings, client, SystemClock())
            silent = await watch.turn(sessions, policy.load(None), settings, client, SystemClock())
    finally:
        await engine.dispose()
    assert first == {"sent": 1, "retrying": 1} and not again and not silent  # the hook refused its first message
    (message,) = mail.messages
    assert message["Subject"].startswith(f"[hitl] review {reviews['soon']} in agent: its client's wait ends in ")
    assert f"https://hitl.example.com/console/reviews/{reviews['soon']}" in message.get_content()
    with factories.sync_session(database_url) as session:
        rows = session.exec(select(Notification)).all()
    assert {row.kind for row in rows} == {"deadline"} and {row.review_id for row in rows} == {reviews["soon"]}
    waiting = next(row for row in rows if row.status == DeliveryStatus.PENDING)
    assert waiting.channel == "webhook" and waiting.attempts == 1  # `hitl notify` retries it after its backoff
    assert not posted and SECRET not in str(message)


def test_hitl_serve_warns_of_a_deadline_without_a_scheduled_turn(
    database_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    inbox: tuple[Inbox, int],
    receiver: tuple[list[dict[str, Any]], str],
) -> None:
    mail, port = inbox
    _, url = receiver
    reviews = seed_deadlines(database_url)
    notify = NotifySettings(smtp_host="127.0.0.1", smtp_port=port)
    app = create_app(make_settings(policy_path=deadline_policy(tmp_path, f"{url}/hook"), notify=notify))
    with TestClient(app):
        deadline = time.monotonic() + 30
        while not mail.messages and time.monotonic() < deadline:
            time.sleep(0.1)
    assert [str(message["Subject"]).split(":")[0] for message in mail.messages] == [
        f"[hitl] review {reviews['soon']} in agent"]  # fmt: skip
